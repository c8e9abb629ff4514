"""RunSlots with per-org caps from the org's plan: an org's runs past its cap wait (never refused while its
backlog has room), the process's PER_ORG_CONCURRENCY bounds every cap, and another org is not held back."""

from __future__ import annotations

import asyncio

import pytest

from convergence.consumer.slots import OrgBacklogFull, RunSlots

CAPS = {"starter": 2, "scale": 20, "zero": 0}


async def plan_cap(org: str) -> int | None:
    return CAPS.get(org)


async def settle() -> None:
    for _ in range(50):  # let every ready task run (no clock involved)
        await asyncio.sleep(0)


async def hold(slots: RunSlots, org: str, release: asyncio.Event, ran: list[str]) -> None:
    async with slots.acquire(org):
        ran.append(org)
        await release.wait()


async def test_an_org_waits_at_its_plans_cap_and_another_org_runs_its_own():
    slots = RunSlots(total=10, per_org=4, backlog_per_org=10, limit=plan_cap)
    release = asyncio.Event()
    ran: list[str] = []
    tasks = [asyncio.create_task(hold(slots, org, release, ran)) for org in ["starter"] * 4 + ["scale"] * 5]
    await settle()
    assert (slots.running("starter"), slots.waiting("starter")) == (2, 2)  # the plan's 2
    assert (slots.running("scale"), slots.waiting("scale")) == (4, 1)  # 20 on the plan, 4 in this process
    release.set()
    await asyncio.gather(*tasks)
    assert ran.count("starter") == 4 and ran.count("scale") == 5 and slots.running() == 0


async def test_caps_without_a_plan_and_of_zero():
    slots = RunSlots(total=10, per_org=3, backlog_per_org=10, limit=plan_cap)
    assert await slots.cap("unknown") == 3  # no plan known: the process's bound
    assert await slots.cap("zero") == 1  # never a cap that holds an org's messages for good
    assert await RunSlots(total=10, per_org=3, backlog_per_org=10).cap("starter") == 3  # no limit given


async def test_a_full_backlog_is_handed_off_and_a_waiting_run_gets_the_freed_slot():
    slots = RunSlots(total=10, per_org=4, backlog_per_org=1, limit=plan_cap)
    release = asyncio.Event()
    ran: list[str] = []
    tasks = [asyncio.create_task(hold(slots, "starter", release, ran)) for _ in range(3)]
    await settle()
    assert (slots.running("starter"), slots.waiting("starter")) == (2, 1)
    with pytest.raises(OrgBacklogFull):
        async with slots.acquire("starter"):
            pass
    release.set()
    await asyncio.gather(*tasks)
    assert len(ran) == 3 and not slots._org  # nothing kept once the org is idle
