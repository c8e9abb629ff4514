"""Admission on the emulator: concurrent requests share BigQuery round trips, yet each gets its own org's
answer; cached standings still enforce the quota exactly in this process; counters reach BigQuery."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from consumer.admission import AdmissionControl
from pipeline.results import PipelineResult, RunStatus
from runtime.services import Services
from tenancy.gate import OrgGate
from tenancy.onboarding import onboard_org
from tenancy.plans import load_plans
from tenancy.subscriptions import Subscriptions
from tests.test_warehouse_support import unique

pytestmark = pytest.mark.emulator


def admission(settings, **overrides) -> AdmissionControl:
    options = {"cache_seconds": 30.0, "quota_flush_seconds": 0.05, "batch_delay": 0.01} | overrides
    return AdmissionControl(Services(settings), **options)


def succeed(services: Services, org: str, run_id: str) -> None:
    now = datetime.now(UTC)
    services.runlog.run_finished(PipelineResult(
        run_id=run_id, org_slug=org, pipeline_id=f"{org}-p", status=RunStatus.SUCCESS, steps=[], started_at=now,
        ended_at=now, duration_ms=0))


def usage_today(client, settings, org: str) -> int:
    rows = list(client.query(
        f"SELECT MAX(pipelines_run_today) AS n FROM `{client.project}.{settings.central_dataset}.org_usage_quotas` "
        f"WHERE org_slug = '{org}' AND usage_date = CURRENT_DATE()").result())
    return int(rows[0]["n"] or 0)


def test_many_requests_share_two_lookups_and_each_gets_its_own_orgs_answer(tenancy_env):
    settings, client, cipher = tenancy_env
    active, suspended, ghost = unique("adma"), unique("adms"), unique("admg")
    onboard_org(client, settings, cipher, active, "SCALE")
    onboard_org(client, settings, cipher, suspended, "SCALE")
    Subscriptions(client, settings).update(suspended, billing_status="past_due")
    control = admission(settings)
    done_run = f"run_{uuid.uuid4().hex[:10]}"
    succeed(control.services, active, done_run)
    # The same run_id succeeded for `active` only: for the other org it is a new run.
    requests = [(done_run, active), (done_run, suspended)]
    requests += [(f"run_{uuid.uuid4().hex[:10]}", org) for org in (active, suspended, ghost) for _ in range(20)]

    async def main():
        return await asyncio.gather(*(control.admit(run_id, org) for run_id, org in requests))

    answers = asyncio.run(main())
    assert control.calls == {"succeeded_among": 1, "standings": 1}  # for 62 requests of 3 orgs
    by_request = dict(zip(requests, answers, strict=True))
    assert by_request[(done_run, active)].already_succeeded
    assert not by_request[(done_run, suspended)].already_succeeded
    for (_, org), answer in by_request.items():
        if answer.already_succeeded:
            continue
        expected = {active: "ALLOWED", suspended: "SUBSCRIPTION_SUSPENDED", ghost: "ORG_NOT_FOUND"}[org]
        assert answer.decision.code == expected
        assert answer.decision.org_slug == org


def test_cached_standing_still_stops_an_org_at_its_quota_and_the_counts_reach_bigquery(tenancy_env):
    settings, client, cipher = tenancy_env
    org = unique("admq")
    onboard_org(client, settings, cipher, org, "STARTER")
    limit = load_plans(settings).plan("STARTER").daily_pipeline_runs
    control = admission(settings, quota_flush_seconds=0.2)

    codes = []

    async def main():
        for _ in range(limit + 2):
            answer = await control.admit(f"run_{uuid.uuid4().hex[:10]}", org)
            codes.append(answer.decision.code)
            if answer.decision.allowed:
                control.count_run(org)
        await control.aclose()

    asyncio.run(main())
    assert codes == ["ALLOWED"] * limit + ["QUOTA_EXCEEDED"] * 2
    # Standings read once (cached), however many runs; the counters written in few MERGEs, not one per run.
    assert control.calls["standings"] == 1
    assert 1 <= control.calls["record_runs"] <= 3
    assert usage_today(client, settings, org) == limit
    # Another process reading BigQuery now sees the quota used up.
    assert OrgGate(client, settings).check(org).code == "QUOTA_EXCEEDED"


def test_counts_of_many_orgs_go_out_in_one_merge(tenancy_env):
    settings, client, cipher = tenancy_env
    orgs = [unique("admm") for _ in range(3)]
    for org in orgs:
        onboard_org(client, settings, cipher, org, "SCALE")
    control = admission(settings, quota_flush_seconds=60)

    async def main():
        for index, org in enumerate(orgs):
            for _ in range(index + 1):
                control.count_run(org)
        await control.flush_usage()

    asyncio.run(main())
    assert control.calls == {"record_runs": 1}
    assert [usage_today(client, settings, org) for org in orgs] == [1, 2, 3]


def test_without_a_cache_a_suspension_is_seen_by_the_next_request(tenancy_env):
    settings, client, cipher = tenancy_env
    org = unique("admz")
    onboard_org(client, settings, cipher, org, "SCALE")
    control = admission(settings, cache_seconds=0.0)

    async def check() -> str:
        return (await control.admit(f"run_{uuid.uuid4().hex[:10]}", org)).decision.code

    assert asyncio.run(check()) == "ALLOWED"
    Subscriptions(client, settings).update(org, billing_status="past_due")
    assert asyncio.run(check()) == "SUBSCRIPTION_SUSPENDED"


def test_an_invalid_slug_is_refused_without_touching_other_requests(tenancy_env):
    settings, client, cipher = tenancy_env
    org = unique("admv")
    onboard_org(client, settings, cipher, org, "SCALE")
    control = admission(settings)

    async def main():
        return await asyncio.gather(control.admit("run_aaaaaaaa", "DROP TABLE x"),
                                    control.admit("run_bbbbbbbb", org))

    bad, good = asyncio.run(main())
    assert bad.decision.code == "INVALID_ORG_SLUG" and good.decision.code == "ALLOWED"


def test_requests_admitted_together_do_not_share_the_last_quota_slots(tenancy_env):
    settings, client, cipher = tenancy_env
    org = unique("admt")
    onboard_org(client, settings, cipher, org, "STARTER")
    limit = load_plans(settings).plan("STARTER").daily_pipeline_runs
    control = admission(settings)

    async def main():
        return await asyncio.gather(*(control.admit(f"run_{uuid.uuid4().hex[:10]}", org) for _ in range(limit + 3)))

    codes = [answer.decision.code for answer in asyncio.run(main())]
    assert control.calls["standings"] == 1  # one batch
    assert codes.count("ALLOWED") == limit and codes.count("QUOTA_EXCEEDED") == 3
