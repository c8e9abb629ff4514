"""The org_usage_quotas reporting counters are refreshed from the scheduler tick path (consumer/ticks.py), on
the emulator: the process handling a tick runs OrgGate.refresh_usage once per 15-minute slot after the
fan-out; a duplicate tick in the same slot sends no second MERGE; the first tick of a day also refreshes
the day before; a failed refresh never nacks the tick."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

import pytest

from convergence.consumer.outcome import OutcomeKind
from convergence.consumer.ticks import TickHandler, UsageRefresh
from convergence.runtime.services import Services
from convergence.tenancy.onboarding import onboard_org
from tests.support.warehouse import unique
from tests.unit.consumer.test_admission import dml, recorded, succeed, usage_today

pytestmark = pytest.mark.emulator


@dataclass
class _Report:
    published: int = 0

    def summary(self) -> str:
        return f"{self.published} run request(s) published"


@dataclass
class _FanOut:
    ticks: list[datetime] = field(default_factory=list)

    def fan_out(self, tick_at: datetime) -> _Report:
        self.ticks.append(tick_at)
        return _Report()


def _tick(at: datetime) -> bytes:
    return json.dumps({"tick_at": at.isoformat()}).encode()


def _merges_on_usage(sent: list[str]) -> int:
    return dml([sql for sql in sent if "org_usage_quotas" in sql])


async def test_ticks_refresh_the_usage_counters_once_per_slot(tenancy_env):
    settings, client, cipher = tenancy_env
    orgs = [unique("use"), unique("use")]
    for org in orgs:
        onboard_org(client, settings, cipher, org, "SCALE")
    services = Services(settings)
    for index, org in enumerate(orgs):
        for _ in range(index + 1):
            run_id = f"run_{uuid.uuid4().hex[:10]}"
            services.runlog.run_started(run_id=run_id, org_slug=org, pipeline="p")
            succeed(services, org, run_id)
    gate = services.gate
    sent = recorded(services.bigquery)
    fanout = _FanOut()
    refresh = UsageRefresh(lambda: gate, window=timedelta(minutes=60))
    handler = TickHandler(fanout, refresh)
    today = datetime.now(UTC).date()
    noon = datetime.combine(today, time(12, 0), tzinfo=UTC)

    outcome = await handler.handle(_tick(noon), {}, "m1", 1)
    assert outcome.kind is OutcomeKind.SUCCEEDED and fanout.ticks == [noon]  # the fan-out first
    assert list(outcome.details["usage_refreshed"]) == [today.isoformat()]
    assert _merges_on_usage(sent) == 1
    assert [usage_today(client, settings, org) for org in orgs] == [1, 2]

    # The same slot again (a duplicate tick delivered here): fanned out, no second MERGE.
    duplicate = await handler.handle(_tick(noon + timedelta(minutes=7)), {}, "m2", 1)
    assert duplicate.kind is OutcomeKind.SUCCEEDED and duplicate.details["usage_refreshed"] == {}
    assert len(fanout.ticks) == 2 and _merges_on_usage(sent) == 1

    # The next slot sees the runs logged since.
    run_id = f"run_{uuid.uuid4().hex[:10]}"
    services.runlog.run_started(run_id=run_id, org_slug=orgs[0], pipeline="p")
    await handler.handle(_tick(noon + timedelta(minutes=15)), {}, "m3", 1)
    assert _merges_on_usage(sent) == 2
    assert [usage_today(client, settings, org) for org in orgs] == [2, 2]

    # The first tick of a day covers the end of the day before: both days are refreshed.
    first_of_day = datetime.combine(today, time(0, 0), tzinfo=UTC)
    assert refresh.days(first_of_day) == [today - timedelta(days=1), today]
    late = await handler.handle(_tick(first_of_day), {}, "m4", 1)
    assert list(late.details["usage_refreshed"]) == [(today - timedelta(days=1)).isoformat(), today.isoformat()]
    assert _merges_on_usage(sent) == 4
    services.close()


async def test_a_failed_refresh_does_not_nack_the_tick(tenancy_env):
    def broken_gate():
        raise RuntimeError("BigQuery unavailable")

    fanout = _FanOut()
    handler = TickHandler(fanout, UsageRefresh(broken_gate, window=timedelta(minutes=60)))
    at = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
    outcome = await handler.handle(_tick(at), {}, "m1", 1)
    assert outcome.kind is OutcomeKind.SUCCEEDED and fanout.ticks == [at]
    assert "usage_refreshed" not in outcome.details
    # Not marked done: the next delivery of the slot tries again.
    assert handler.usage is not None and handler.usage.refreshed == []
