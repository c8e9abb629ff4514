"""Through the consumer on the local stack: an org runs at most its plan's `concurrent_pipelines` runs at
once (its other runs wait for a slot, leased, not refused) while another org runs its own; a run_once
pipeline is refused the second time for an org (ALREADY_RAN) and runs again with its force parameter."""

from __future__ import annotations

import time
import uuid

import pytest

from convergence.tenancy.plans import load_plans
from tests.fake_processors.sample import hold
from tests.harness import Platform

pytestmark = pytest.mark.emulator


@pytest.fixture(scope="module")
def platform(local_stack, tmp_path_factory):
    # PER_ORG_CONCURRENCY above every plan's cap here: the plan is what limits.
    platform = Platform(local_stack, tmp_path_factory.mktemp("slots"), consumer_workers=8, per_org_concurrency=8)
    platform.onboard("starter_slots", plan="STARTER")
    platform.onboard("pro_slots", plan="PROFESSIONAL")
    platform.start_consumer()
    yield platform
    hold.RELEASE.set()
    platform.close()


def run_id() -> str:
    return f"run_{uuid.uuid4().hex[:12]}"


def until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def most_at_once(records) -> int:
    """The largest number of the runs whose [start_time, end_time] overlap, from their run-log rows."""
    edges = sorted([(r.start_time, 1) for r in records] + [(r.end_time, -1) for r in records],
                   key=lambda edge: (edge[0], edge[1]))  # an end before a start at the same instant
    current = peak = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def test_an_org_runs_at_most_its_plans_concurrent_runs_while_another_runs_its_own(platform):
    plans = load_plans(platform.settings)
    assert plans.plan("STARTER").concurrent_pipelines == 2 and plans.plan("PROFESSIONAL").concurrent_pipelines == 5
    hold.RELEASE.clear()
    starter = [platform.publish("starter_slots", "testing/consumer/hold", run_id=run_id()) for _ in range(5)]
    pro = [platform.publish("pro_slots", "testing/consumer/hold", run_id=run_id()) for _ in range(3)]
    slots = platform.consumer.service.slots
    # Every message is in: the PROFESSIONAL org's 3 runs are all under way, the STARTER org's 2 are, and
    # its other 3 wait for a slot (none was refused or handed off).
    until(lambda: hold.entered("pro_slots") == 3 and hold.entered("starter_slots") == 2
          and slots.waiting("starter_slots") == 3, "3 + 2 runs under way, 3 waiting")
    assert slots.running("starter_slots") == 2 and platform.consumer.service.pools[0].stats.handed_off == 0
    hold.RELEASE.set()
    records = [platform.run_record(rid, timeout=90, status="SUCCESS") for rid in starter + pro]
    assert hold.entered("starter_slots") == 5
    assert most_at_once(records[:5]) == 2  # from the run log: never more than the plan's 2
    assert most_at_once(records[5:]) == 3  # the other org's runs were not held back by it


def test_a_run_once_pipeline_is_refused_the_second_time_unless_forced(platform):
    org = "pro_slots"
    first = platform.publish(org, "testing/consumer/once", run_id=run_id())
    assert platform.run_record(first, status="SUCCESS").status == "SUCCESS"
    second = platform.publish(org, "testing/consumer/once", run_id=run_id())
    refused = platform.run_record(second, status="REJECTED")
    assert refused.error_code == "ALREADY_RAN" and "once" in refused.error_message
    events = platform.follower.wait_for(second, "request_rejected")
    assert any(e.get("error", {}).get("code") == "ALREADY_RAN" for e in events)
    not_forced = platform.publish(org, "testing/consumer/once", {"force": "false"}, run_id=run_id())
    assert platform.run_record(not_forced, status="REJECTED").error_code == "ALREADY_RAN"
    forced = platform.publish(org, "testing/consumer/once", {"force": "true"}, run_id=run_id())
    assert platform.run_record(forced, status="SUCCESS").status == "SUCCESS"
    # Another org has its own once.
    other = platform.publish("starter_slots", "testing/consumer/once", run_id=run_id())
    assert platform.run_record(other, status="SUCCESS").status == "SUCCESS"
