"""Run and step logs on the emulator: a bounded number of calls per run, latest-state queries, org scoping,
rejected and dead-lettered requests, and nothing lost when an insert fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.api_core import exceptions as gexc

from convergence.pipeline.results import ErrorInfo, PipelineResult, RunStatus, StepResult, StepStatus
from convergence.warehouse.bootstrap import bootstrap
from convergence.warehouse.client import make_client
from convergence.warehouse.runlog import RunLog, pipeline_logging_id
from tests.support.warehouse import CountingClient, emulator_settings, unique

pytestmark = pytest.mark.emulator


@pytest.fixture(scope="module")
def central(local_stack):
    settings = emulator_settings(local_stack)
    client = make_client(settings)
    assert bootstrap(client, settings).ok
    return settings, client


@pytest.fixture
def runlog(central):
    settings, client = central
    counting = CountingClient(client)
    log = RunLog(counting, settings)  # type: ignore[arg-type]
    log.counting = counting  # type: ignore[attr-defined]
    return log


def result(run_id: str, org: str, status: RunStatus = RunStatus.SUCCESS, steps: int = 5,
           failed_step: int | None = None) -> PipelineResult:
    now = datetime.now(UTC)
    items = []
    for i in range(steps):
        failed = failed_step == i
        items.append(StepResult(
            step_id=f"step_{i}", ps_type="demo.rows", status=StepStatus.FAILED if failed else StepStatus.SUCCESS,
            started_at=now, ended_at=now + timedelta(milliseconds=10), duration_ms=10, rows_processed=100,
            error=ErrorInfo(code="PROVIDER_5XX", message="upstream 503", retryable=True) if failed else None,
            result={"rows_processed": 100, "table": "usage", "nested": {"not": "kept"}}))
    failed_run = status is RunStatus.FAILED
    error = ErrorInfo(code="PROVIDER_5XX", message="upstream 503", retryable=True) if failed_run else None
    return PipelineResult(pipeline_id=f"{org}-demo-rows", run_id=run_id, org_slug=org, status=status, started_at=now,
                          ended_at=now + timedelta(seconds=1), duration_ms=1000, steps=items, error=error)


def start(log: RunLog, run_id: str, org: str, attempt: int = 1) -> str:
    return log.run_started(run_id=run_id, org_slug=org, pipeline_id=f"{org}-demo-rows", pipeline="demo/example/rows",
                           trigger="adhoc", attempt=attempt, parameters={"date": "2024-03-01"}, trace_id="trace-1")


def test_a_five_step_run_costs_at_most_four_bigquery_calls(runlog):
    org, run_id = unique("acme"), unique("run")
    before = runlog.counting.total
    start(runlog, run_id, org)
    runlog.run_finished(result(run_id, org), pipeline="demo/example/rows", trigger="adhoc", attempt=1,
                        parameters={"date": "2024-03-01"}, trace_id="trace-1")
    calls = runlog.counting.total - before
    assert calls <= 4, runlog.counting.counts
    assert calls == 3  # RUNNING row; step rows; final row

    latest = runlog.latest_run(run_id, org)
    assert latest is not None and latest.status == "SUCCESS" and latest.attempt == 1
    assert latest.pipeline_logging_id == pipeline_logging_id(run_id, 1)
    assert (latest.rows_processed, latest.steps_total, latest.steps_failed) == (500, 5, 0)
    assert latest.parameters == {"date": "2024-03-01"} and latest.trace_id == "trace-1"
    assert runlog.has_succeeded(run_id, org)
    steps = runlog.step_logs(run_id, org)
    assert [s.step_id for s in steps] == [f"step_{i}" for i in range(5)]
    assert steps[0].rows_processed == 100 and steps[0].result_json == '{"rows_processed":100,"table":"usage"}'


def test_redelivered_run_latest_state_and_listing(runlog):
    org, run_id = unique("acme"), unique("run")
    start(runlog, run_id, org, attempt=1)
    assert runlog.latest_run(run_id, org).status == "RUNNING"
    runlog.run_finished(result(run_id, org, RunStatus.FAILED, failed_step=2), attempt=1)
    failed = runlog.latest_run(run_id, org)
    assert (failed.status, failed.error_code, failed.steps_failed) == ("FAILED", "PROVIDER_5XX", 1)
    assert not runlog.has_succeeded(run_id, org)

    start(runlog, run_id, org, attempt=2)
    assert runlog.latest_run(run_id, org).status == "RUNNING"
    runlog.run_finished(result(run_id, org), attempt=2)
    assert runlog.latest_run(run_id, org).attempt == 2 and runlog.has_succeeded(run_id, org)

    listed = runlog.list_runs(org_slug=org)
    assert [(r.run_id, r.status, r.attempt) for r in listed] == [(run_id, "SUCCESS", 2)]
    assert runlog.list_runs(org_slug=org, status="FAILED") == []
    assert len(runlog.step_logs(run_id, org)) == 10  # both attempts' steps
    assert runlog.list_runs(org_slug=org, since=datetime.now(UTC) + timedelta(hours=1)) == []


def test_rejected_and_dead_lettered_records(runlog):
    org = unique("acme")
    rejected, dead = unique("run"), unique("run")
    runlog.record_rejected(run_id=rejected, org_slug=org, code="QUOTA_EXCEEDED", message="daily quota used",
                           pipeline="demo/example/rows", trigger="scheduled", attempt=1, parameters={})
    start(runlog, dead, org, attempt=5)
    runlog.run_finished(result(dead, org, RunStatus.FAILED, failed_step=0), attempt=5)
    runlog.record_dead_lettered(run_id=dead, org_slug=org, delivery_count=5, message="gave up after 5 deliveries",
                                pipeline="demo/example/rows", trigger="adhoc", request_json='{"run_id": "x"}')
    r = runlog.latest_run(rejected, org)
    assert (r.status, r.error_code, r.error_message) == ("REJECTED", "QUOTA_EXCEEDED", "daily quota used")
    d = runlog.latest_run(dead, org)
    assert (d.status, d.error_code, d.delivery_count) == ("FAILED", "DEAD_LETTERED", 5)
    assert {r.run_id: r.error_code for r in runlog.list_runs(org_slug=org)} == {
        rejected: "QUOTA_EXCEEDED", dead: "DEAD_LETTERED"}
    assert [x.run_id for x in runlog.list_runs(org_slug=org, status="REJECTED")] == [rejected]
    # A request too broken to name its org is still recorded, under a placeholder org.
    runlog.record_rejected(run_id=unique("msg"), org_slug="Bad Org!", code="INVALID_MESSAGE", message="not JSON")


def test_queries_are_org_scoped(runlog):
    a, b, run_id = unique("orga"), unique("orgb"), unique("run")
    start(runlog, run_id, a)
    runlog.run_finished(result(run_id, a), attempt=1)
    assert runlog.latest_run(run_id, b) is None
    assert not runlog.has_succeeded(run_id, b)
    assert runlog.step_logs(run_id, b) == []
    assert runlog.list_runs(org_slug=b) == []
    assert {r.org_slug for r in runlog.list_runs(org_slug=a)} == {a}


def test_failed_inserts_are_kept_and_flushed(runlog):
    org, run_id = unique("acme"), unique("run")
    runlog.counting.fail("insert_rows_json", gexc.ServiceUnavailable("down"), gexc.ServiceUnavailable("down"))
    start(runlog, run_id, org)  # fails: kept
    runlog.run_finished(result(run_id, org, steps=2), attempt=1)  # steps insert fails: kept
    # The final row waits for its steps' rows: a SUCCESS without its step rows would make a redelivery a
    # duplicate while the step log is incomplete.
    assert runlog.latest_run(run_id, org) is None
    assert runlog.step_logs(run_id, org) == []
    runlog.close()  # shutdown: the rest goes out, steps first
    assert runlog.latest_run(run_id, org).status == "SUCCESS"
    assert len(runlog.step_logs(run_id, org)) == 2
    assert runlog.flush() is True


def test_staged_step_rows_wait_for_the_group_commit(runlog):
    org, run_id = unique("acme"), unique("run")
    start(runlog, run_id, org)
    before = runlog.counting.total
    runlog.run_finished(result(run_id, org), attempt=1, write=False)  # as the consumer's RunLogObserver does
    assert runlog.counting.total == before  # no call per step
    runlog.flush()  # the group commit (or shutdown): the steps are not lost
    assert len(runlog.step_logs(run_id, org)) == 5
