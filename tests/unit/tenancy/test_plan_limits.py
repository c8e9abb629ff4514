"""Plan limits from configs/setup/plans.yml on the emulator: the monthly run quota refuses with its own code
(counted from the run log, last month's runs not included), and the org_usage_quotas counters a refresh
writes say how many of the day's runs succeeded and failed (by each run's outcome, not by its rows)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

import pytest

from convergence.pipeline.results import PipelineResult, RunStatus
from convergence.tenancy.gate import MONTHLY_QUOTA_EXCEEDED, OrgGate
from convergence.tenancy.onboarding import onboard_org
from convergence.tenancy.plans import parse_plans
from convergence.warehouse.runlog import RunLog
from tests.support.warehouse import unique

pytestmark = pytest.mark.emulator

SMALL = parse_plans({"plans": {"TINY": {"daily_pipeline_runs": 10, "monthly_pipeline_runs": 3,
                                        "concurrent_pipelines": 2}},
                     "billing_status": {"active": "ACTIVE"}, "allowed_statuses": ["ACTIVE"]})


def _run_id() -> str:
    return f"run_{uuid.uuid4().hex[:10]}"


def _finish(runlog: RunLog, org: str, run_id: str, status: RunStatus, attempt: int = 1, pipeline: str = "p") -> None:
    now = datetime.now(UTC)
    runlog.run_finished(PipelineResult(run_id=run_id, org_slug=org, pipeline_id=f"{org}-p", status=status, steps=[],
                                       started_at=now, ended_at=now, duration_ms=0), attempt=attempt,
                        pipeline=pipeline)


def test_the_monthly_quota_refuses_with_its_own_code(tenancy_env):
    settings, client, cipher = tenancy_env
    org = unique("month")
    onboard_org(client, settings, cipher, org, "STARTER")
    central = f"{client.project}.{settings.central_dataset}"
    client.query(f"UPDATE `{central}.org_subscriptions` SET plan_name = 'TINY' WHERE org_slug = '{org}'").result()
    gate = OrgGate(client, settings, plans=SMALL)
    runlog = RunLog(client, settings)
    now = datetime.now(UTC)
    month_start = datetime.combine(now.date().replace(day=1), time(1), tzinfo=UTC)
    runlog.run_started(run_id=_run_id(), org_slug=org, pipeline="p", started_at=month_start - timedelta(days=2))
    for _ in range(2):  # earlier this month (today when today is the 1st)
        runlog.run_started(run_id=_run_id(), org_slug=org, pipeline="p", started_at=min(month_start, now))
    allowed = gate.check(org)
    assert (allowed.allowed, allowed.runs_month, allowed.monthly_limit) == (True, 2, 3)
    # A run admitted but not logged yet counts against the month as well.
    assert gate.decide(org, gate.standings([org])[org], runs_not_yet_counted=1).code == MONTHLY_QUOTA_EXCEEDED
    runlog.run_started(run_id=_run_id(), org_slug=org, pipeline="p")
    refused = gate.check(org)
    assert (refused.allowed, refused.code, refused.runs_month, refused.monthly_limit) == (
        False, MONTHLY_QUOTA_EXCEEDED, 3, 3)
    assert refused.runs_today < refused.daily_limit  # the daily quota is not what refused it
    assert "3 of 3" in refused.message and "monthly" in refused.message
    next_month = OrgGate(client, settings, plans=SMALL, clock=lambda: month_start.replace(day=28) + timedelta(days=5))
    assert next_month.check(org).allowed


def test_usage_counters_say_how_many_runs_succeeded_and_failed(tenancy_env):
    settings, client, cipher = tenancy_env
    org = unique("count")
    onboard_org(client, settings, cipher, org, "SCALE")
    runlog = RunLog(client, settings)
    retried, failed, timed_out, running = (_run_id() for _ in range(4))
    for run_id in (retried, failed, timed_out, running):
        runlog.run_started(run_id=run_id, org_slug=org, pipeline="p")
    _finish(runlog, org, retried, RunStatus.FAILED)
    runlog.run_started(run_id=retried, org_slug=org, pipeline="p", attempt=2)
    _finish(runlog, org, retried, RunStatus.SUCCESS, attempt=2)  # failed once, then succeeded: a success
    _finish(runlog, org, failed, RunStatus.FAILED)
    _finish(runlog, org, timed_out, RunStatus.TIMEOUT)
    runlog.record_rejected(run_id=_run_id(), org_slug=org, code="QUOTA_EXCEEDED", message="no")
    gate = OrgGate(client, settings)
    assert gate.refresh_usage() >= 1
    rows = list(client.query(
        "SELECT pipelines_run_today AS runs, pipelines_succeeded_today AS ok, pipelines_failed_today AS failed "
        f"FROM `{client.project}.{settings.central_dataset}.org_usage_quotas` "
        "WHERE org_slug = @org AND usage_date = @day", job_config=_params(org, gate.today())).result())
    assert [(r["runs"], r["ok"], r["failed"]) for r in rows] == [(4, 1, 2)]


def _params(org, day):
    from google.cloud import bigquery

    return bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("org", "STRING", org),
                                                     bigquery.ScalarQueryParameter("day", "DATE", day)])


def test_run_once_and_slot_caps_share_one_query_per_batch_and_are_cached(tenancy_env):
    import asyncio

    from convergence.consumer.admission import AdmissionControl
    from convergence.runtime.services import Services

    settings, client, cipher = tenancy_env
    orgs = [unique("once") for _ in range(3)]
    for org, plan in zip(orgs, ("STARTER", "PROFESSIONAL", "SCALE"), strict=True):
        onboard_org(client, settings, cipher, org, plan)
    control = AdmissionControl(Services(settings), cache_seconds=30.0, batch_delay=0.01)
    runlog = control.services.runlog
    done = _run_id()
    runlog.run_started(run_id=done, org_slug=orgs[0], pipeline="a/b/once")
    _finish(runlog, orgs[0], done, RunStatus.SUCCESS, pipeline="a/b/once")

    async def check(forced=False):
        return await asyncio.gather(*(control.check_once(org, "a/b/once", _run_id(), forced=forced,
                                                         timeout_seconds=60) for org in orgs))

    async def main():
        caps = await asyncio.gather(*(control.concurrency(org) for org in orgs), control.concurrency("bad slug!"))
        first = await check()
        second = await check()  # cached: no query; orgs[1] and orgs[2] each have a run of it under way here
        forced = await check(forced=True)
        return caps, first, second, forced

    caps, first, second, forced = asyncio.run(main())
    assert caps == [2, 5, 20, None]  # configs/setup/plans.yml concurrent_pipelines; an invalid slug: no plan
    assert [c.refused for c in first] == [True, False, False] and "already ran" in first[0].message
    assert [c.refused for c in second] == [True, True, True] and "is running" in second[1].message
    assert not any(c.refused for c in forced)
    assert control.calls == {"standings": 1, "succeeded_pipelines": 1}  # one query each, for all three orgs
