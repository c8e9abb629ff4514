"""`convergence runs list|show` on the BigQuery emulator: seeded run and step logs of two orgs come back as
readable tables, filters work, and with --org another org's run is refused, never shown."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from convergence.commands.runs import format_duration, format_error, parse_since, render_table, runs
from convergence.pipeline.results import ErrorInfo, PipelineResult, RunStatus, StepResult, StepStatus

ACME, OTHER = "acme_cli", "other_cli"


# -- pure helpers -----------------------------------------------------------------------------------------
def test_parse_since():
    now = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)
    assert parse_since("1d", now) == now - timedelta(days=1)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2w", now) == now - timedelta(weeks=2)
    assert parse_since("2026-05-01", now) == datetime(2026, 5, 1, tzinfo=UTC)
    assert parse_since("2026-05-01T10:00:00Z", now) == datetime(2026, 5, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a duration"):
        parse_since("yesterday", now)


def test_formatting():
    assert [format_duration(v) for v in (None, 850, 12_345, 245_000, 3_725_000)] == [
        "-", "850ms", "12.3s", "4m05s", "1h02m"]
    assert format_error(None, None) == ""
    assert format_error("CODE", "line one\nline two") == "CODE: line one line two"
    assert len(format_error("CODE", "x" * 500)) == 70
    table = render_table(("A", "LONG_HEADER"), [["value", None], ["v", 12]])
    assert table.splitlines() == ["A      LONG_HEADER", "value  -", "v      12"]


# -- against a seeded run log -----------------------------------------------------------------------------
def _result(run_id: str, org: str, status: RunStatus, steps: list[StepResult], error: ErrorInfo | None = None,
            duration_ms: int = 1000) -> PipelineResult:
    now = datetime.now(UTC)
    return PipelineResult(pipeline_id=f"{org}-testing-consumer-ok", run_id=run_id, org_slug=org, status=status,
                          started_at=now, ended_at=now + timedelta(milliseconds=duration_ms), duration_ms=duration_ms,
                          steps=steps, error=error)


def _step(step_id: str, status: StepStatus, ms: int, rows: int, error: ErrorInfo | None = None,
          ps_type: str = "sample.sleep") -> StepResult:
    now = datetime.now(UTC)
    return StepResult(step_id=step_id, ps_type=ps_type, status=status, started_at=now,
                      ended_at=now + timedelta(milliseconds=ms), duration_ms=ms, rows_processed=rows, error=error)


def _seed(runlog: Any, run_id: str, org: str, pipeline: str, result: PipelineResult, trace_id: str,
          attempt: int = 1) -> None:
    runlog.run_started(run_id=run_id, org_slug=org, pipeline_id=result.pipeline_id, pipeline=pipeline,
                       trigger="adhoc", attempt=attempt, trace_id=trace_id)
    runlog.run_finished(result, pipeline=pipeline, trigger="adhoc", attempt=attempt, trace_id=trace_id)


@pytest.fixture(scope="module")
def seeded(local_stack):
    from convergence.settings import reset_settings
    from convergence.warehouse.bootstrap import bootstrap
    from convergence.warehouse.client import make_client
    from convergence.warehouse.runlog import RunLog
    from tests.support.warehouse import emulator_settings, unique

    # capture_logs: never depend on how an earlier test left structlog (log lines are not under test).
    with capture_logs(), pytest.MonkeyPatch.context() as patch:
        settings = emulator_settings(local_stack)
        client = make_client(settings)
        assert bootstrap(client, settings).ok
        runlog = RunLog(client, settings)
        ids = {name: unique(f"run_{name}") for name in ("ok", "failed", "rejected", "other", "dead")}
        down = ErrorInfo(code="PROVIDER_5XX", message="upstream 503\nretry later", retryable=False)
        _seed(runlog, ids["ok"], ACME, "testing/consumer/ok", _result(ids["ok"], ACME, RunStatus.SUCCESS, [
            _step("first", StepStatus.SUCCESS, 1200, 3), _step("second", StepStatus.SUCCESS, 40, 4)]), "trace-ok")
        failed = _result(ids["failed"], ACME, RunStatus.FAILED, [
            _step("extract", StepStatus.FAILED, 75_000, 0, down, ps_type="sample.fail"),
            _step("transform", StepStatus.SKIPPED, 0, 0, ErrorInfo(code="UPSTREAM_FAILED", message="extract failed"))],
            error=down, duration_ms=75_500)
        _seed(runlog, ids["failed"], ACME, "testing/consumer/permanent", failed, "trace-failed", attempt=2)
        runlog.record_rejected(run_id=ids["rejected"], org_slug=ACME, code="UNKNOWN_PIPELINE",
                               message="no pipeline testing/consumer/nope", pipeline="testing/consumer/nope",
                               trigger="adhoc", attempt=1, trace_id="trace-rejected")
        _seed(runlog, ids["other"], OTHER, "secret/other/pipeline", _result(ids["other"], OTHER, RunStatus.SUCCESS, [
            _step("only", StepStatus.SUCCESS, 10, 99)]), "trace-other")
        dead = ErrorInfo(code="DEAD_LETTERED", message="Pub/Sub gave up after 5 deliveries", retryable=False)
        _seed(runlog, ids["dead"], OTHER, "testing/consumer/permanent", _result(
            ids["dead"], OTHER, RunStatus.FAILED, [_step("only", StepStatus.FAILED, 10, 0, dead)], error=dead),
            "trace-dead")
        assert runlog.flush()

        # The CLI reads its settings from the environment, like `convergence runs` in a shell.
        env = {"CENTRAL_DATASET": settings.central_dataset, "BIGQUERY_EMULATOR_HOST": settings.bigquery_emulator_host,
               "GCP_PROJECT_ID": settings.gcp_project_id, "ENVIRONMENT": "development"}
        for key, value in env.items():
            patch.setenv(key, value)
        reset_settings()
        yield ids
    reset_settings()


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(runs, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


def _table(output: str) -> list[list[str]]:
    lines = [line for line in output.splitlines() if line.strip()]
    header = lines[0]
    starts = [header.index(name) for name in header.split()]
    rows = []
    for line in lines[1:]:
        if line.endswith(")") or line.endswith("run(s)"):  # the footer
            continue
        rows.append([line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)])
    return [header.split(), *rows]


pytestmark_emulator = pytest.mark.emulator


@pytestmark_emulator
def test_list_for_an_org_shows_its_runs_only(seeded):
    table = _table(invoke("list", "--org", ACME))
    assert table[0] == ["RUN_ID", "ORG", "STATUS", "PIPELINE", "TRIGGER", "ATTEMPT", "STARTED", "DURATION", "ROWS",
                        "ERROR"]
    rows = {row[0]: row for row in table[1:]}
    assert set(rows) == {seeded["ok"], seeded["failed"], seeded["rejected"]}
    assert rows[seeded["ok"]][1:6] == [ACME, "SUCCESS", "testing/consumer/ok", "adhoc", "1"]
    assert rows[seeded["ok"]][7:9] == ["1.0s", "7"]
    assert rows[seeded["ok"]][9] == ""
    assert rows[seeded["failed"]][2:6] == ["FAILED", "testing/consumer/permanent", "adhoc", "2"]
    assert rows[seeded["failed"]][7:] == ["1m16s", "0", "PROVIDER_5XX: upstream 503 retry later"]
    assert rows[seeded["rejected"]][2] == "REJECTED"
    assert rows[seeded["rejected"]][9].startswith("UNKNOWN_PIPELINE: no pipeline")
    datetime.strptime(rows[seeded["ok"]][6], "%Y-%m-%d %H:%M:%S")  # noqa: DTZ007 - printed in UTC


@pytestmark_emulator
def test_list_filters(seeded):
    failed = _table(invoke("list", "--org", ACME, "--status", "failed"))
    assert [row[0] for row in failed[1:]] == [seeded["failed"]]
    everyone = {row[0] for row in _table(invoke("list", "--since", "1d"))[1:]}
    assert {seeded["ok"], seeded["other"]} <= everyone
    assert "No runs found for org acme_cli." in invoke("list", "--org", ACME, "--since", "2999-01-01")
    limited = invoke("list", "--org", ACME, "--limit", "1")
    assert len(_table(limited)) == 2 and "limit reached" in limited
    by_pipeline = _table(invoke("list", "--pipeline", "testing/consumer/permanent", "--since", "1d"))
    assert {row[0] for row in by_pipeline[1:]} == {seeded["failed"], seeded["dead"]}
    dead = _table(invoke("list", "--status", "dead_lettered", "--since", "1d"))
    assert [row[0] for row in dead[1:]] == [seeded["dead"]] and dead[1][2] == "FAILED"
    lines = [json.loads(line) for line in invoke("list", "--org", ACME, "--json").splitlines()]
    assert {line["run_id"] for line in lines} == {seeded["ok"], seeded["failed"], seeded["rejected"]}
    assert {line["trace_id"] for line in lines} == {"trace-ok", "trace-failed", "trace-rejected"}


@pytestmark_emulator
def test_bad_options_are_usage_errors(seeded):
    assert "Invalid value for '--org'" in invoke("list", "--org", "Not An Org!", code=2)
    assert "not a duration" in invoke("list", "--since", "last tuesday", code=2)
    assert "Invalid value for '--status'" in invoke("list", "--status", "BROKEN", code=2)


@pytestmark_emulator
def test_show_lists_each_step_with_status_duration_rows_and_error(seeded):
    output = invoke("show", seeded["failed"], "--org", ACME)
    assert f"Run:            {seeded['failed']}" in output
    for expected in ("Status:         FAILED", "Pipeline:       testing/consumer/permanent", "Attempt:        2",
                     "Duration:       1m16s", "Steps:          2 (1 failed)", "Trace id:       trace-failed",
                     "Error:          PROVIDER_5XX: upstream 503 retry later"):
        assert expected in output, expected
    steps = _table(output.split("\n\n", 1)[1])
    assert steps[0] == ["ATTEMPT", "#", "STEP", "PS_TYPE", "STATUS", "STARTED", "DURATION", "ROWS", "ERROR"]
    assert [row[:5] + row[6:] for row in steps[1:]] == [
        ["2", "0", "extract", "sample.fail", "FAILED", "1m15s", "0", "PROVIDER_5XX: upstream 503 retry later"],
        ["2", "1", "transform", "sample.sleep", "SKIPPED", "0ms", "0", "UPSTREAM_FAILED: extract failed"],
    ]
    ok = _table(invoke("show", seeded["ok"]).split("\n\n", 1)[1])
    assert [(row[2], row[4], row[6], row[7]) for row in ok[1:]] == [("first", "SUCCESS", "1.2s", "3"),
                                                                     ("second", "SUCCESS", "40ms", "4")]
    shown = json.loads(invoke("show", seeded["ok"], "--org", ACME, "--json"))
    assert shown["run"]["status"] == "SUCCESS" and [s["step_id"] for s in shown["steps"]] == ["first", "second"]


@pytestmark_emulator
def test_show_refuses_another_orgs_run(seeded):
    output = invoke("show", seeded["other"], "--org", ACME, code=1)
    assert f"run {seeded['other']} not found for org {ACME}" in output
    for leaked in ("secret/other/pipeline", OTHER, "trace-other", "SUCCESS", "only"):
        assert leaked not in output
    # Exactly what a run that does not exist looks like: no hint that it exists elsewhere.
    assert "not found for org acme_cli" in invoke("show", "run_does_not_exist", "--org", ACME, code=1)
    assert "run run_does_not_exist not found" in invoke("show", "run_does_not_exist", code=1)
    # Its own org sees it.
    assert "secret/other/pipeline" in invoke("show", seeded["other"], "--org", OTHER)


def test_runs_is_a_registered_command():
    from convergence.commands import all_commands

    assert "runs" in {command.name for command in all_commands()}
