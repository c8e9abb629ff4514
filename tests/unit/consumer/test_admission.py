"""Admission on the emulator: concurrent requests share BigQuery round trips, yet each gets its own org's
answer; cached standings still enforce the quota exactly in this process; runs are counted from the run
log (no counter DML on the hot path), and a run both logged and admitted here counts once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from convergence.consumer.admission import AdmissionControl
from convergence.pipeline.results import PipelineResult, RunStatus
from convergence.runtime.services import Services
from convergence.tenancy.gate import OrgGate
from convergence.tenancy.onboarding import onboard_org
from convergence.tenancy.plans import load_plans
from convergence.tenancy.subscriptions import Subscriptions
from tests.support.warehouse import unique

pytestmark = pytest.mark.emulator


def admission(settings, **overrides) -> AdmissionControl:
    options = {"cache_seconds": 30.0, "batch_delay": 0.01} | overrides
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


def recorded(client) -> list[str]:
    """Every statement this client instance sends from now on (the client's own method, wrapped)."""
    sent: list[str] = []
    query = client.query

    def recording(sql, *args, **kwargs):
        sent.append(sql)
        return query(sql, *args, **kwargs)

    client.query = recording
    return sent


def dml(sent: list[str]) -> int:
    return sum(1 for sql in sent if sql.lstrip().upper().startswith(("MERGE", "UPDATE", "DELETE")))


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


def test_cached_standing_still_stops_an_org_at_its_quota_and_other_processes_see_the_logged_runs(tenancy_env):
    settings, client, cipher = tenancy_env
    org = unique("admq")
    onboard_org(client, settings, cipher, org, "STARTER")
    limit = load_plans(settings).plan("STARTER").daily_pipeline_runs
    control = admission(settings)
    sent = recorded(control.services.bigquery)

    codes = []

    async def main():
        for _ in range(limit + 2):
            run_id = f"run_{uuid.uuid4().hex[:10]}"
            answer = await control.admit(run_id, org)
            codes.append(answer.decision.code)
            if answer.decision.allowed:  # as the handler does: count it, then the run logs its RUNNING row
                control.count_run(org, run_id)
                control.services.runlog.run_started(run_id=run_id, org_slug=org, pipeline="p")
        await control.aclose()

    asyncio.run(main())
    assert codes == ["ALLOWED"] * limit + ["QUOTA_EXCEEDED"] * 2
    assert control.calls["standings"] == 1  # read once (cached), however many runs
    assert dml(sent) == 0 and not any("org_usage_quotas" in sql for sql in sent)  # admitting wrote no counter
    # Another process reading BigQuery now sees the quota used up, from the run log.
    decision = OrgGate(client, settings).check(org)
    assert (decision.code, decision.runs_today) == ("QUOTA_EXCEEDED", limit)


def test_a_run_admitted_here_and_already_logged_counts_once(tenancy_env):
    settings, client, cipher = tenancy_env
    org = unique("adml")
    onboard_org(client, settings, cipher, org, "STARTER")
    limit = load_plans(settings).plan("STARTER").daily_pipeline_runs
    control = admission(settings, cache_seconds=0.0)  # every batch reads the log again

    async def admit_and_run(log_it: bool) -> str:
        run_id = f"run_{uuid.uuid4().hex[:10]}"
        answer = await control.admit(run_id, org)
        if answer.decision.allowed:
            control.count_run(org, run_id)
            if log_it:
                control.services.runlog.run_started(run_id=run_id, org_slug=org, pipeline="p")
        return answer.decision.code

    async def main():
        # Half the runs logged, half still unlogged (their RUNNING rows not written yet).
        return [await admit_and_run(log_it=i % 2 == 0) for i in range(limit + 1)]

    codes = asyncio.run(main())
    assert codes == ["ALLOWED"] * limit + ["QUOTA_EXCEEDED"]
    assert control.unlogged(org) == limit // 2  # the logged ones were recognized in the log and dropped
    # The unlogged runs' rows arrive: the next read finds them and they count once, not twice.
    answer = asyncio.run(control.admit("run_late", org))
    assert (answer.decision.code, answer.decision.runs_today) == ("QUOTA_EXCEEDED", limit)


def test_runs_of_many_orgs_are_counted_from_the_log_in_one_query(tenancy_env):
    settings, client, cipher = tenancy_env
    orgs = [unique("admm") for _ in range(3)]
    for org in orgs:
        onboard_org(client, settings, cipher, org, "SCALE")
    services = Services(settings)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    for index, org in enumerate(orgs):
        for n in range(index + 1):
            run_id = f"run_{uuid.uuid4().hex[:10]}"
            services.runlog.run_started(run_id=run_id, org_slug=org, pipeline="p")
            if n == 0:  # a run's final row is the same run, not one more
                succeed(services, org, run_id)
        # Not runs of today: a refusal, and a run started yesterday.
        services.runlog.record_rejected(run_id=f"run_{uuid.uuid4().hex[:10]}", org_slug=org, code="QUOTA_EXCEEDED",
                                        message="no")
        services.runlog.run_started(run_id=f"run_{uuid.uuid4().hex[:10]}", org_slug=org, started_at=yesterday)
    calls = services.runlog.calls
    gate = services.gate
    sent = recorded(services.bigquery)
    standings = gate.standings(orgs)
    assert len(sent) == 1
    assert [standings[org].runs_today for org in orgs] == [1, 2, 3]
    # The reporting counters: one MERGE for all orgs, from the same log.
    gate.refresh_usage()
    assert dml(sent) == 1
    assert [usage_today(client, settings, org) for org in orgs] == [1, 2, 3]
    gate.refresh_usage()  # rewritten, not added to
    assert [usage_today(client, settings, org) for org in orgs] == [1, 2, 3]
    assert services.runlog.calls == calls


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
