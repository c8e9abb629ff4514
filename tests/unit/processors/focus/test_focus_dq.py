"""FOCUS conformance results in the central org_meta_dq_results, on the emulator: the check pipeline and
`convergence focus check` each record one row per rule result (PASS/FAIL with counts) for their org, in
one load job per check; a planted defect shows as a FAIL row with its violating row count."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from google.cloud import bigquery

from convergence.pipeline import RunStatus
from convergence.processors.focus.conformance import DQ_TABLE, RULES
from convergence.warehouse.bootstrap import bootstrap
from convergence.warehouse.runlog import pipeline_logging_id
from tests.support.llm import DictCredentials, LlmTestServices, make_settings, new_org, run_pipeline
from tests.unit.processors.focus.test_focus import D1, D2, map_llm, seed_sources

pytestmark = [pytest.mark.emulator]

RULE_COUNT = len(RULES) + 1  # + presence


class CountingWriter:
    """The services' Writer, keeping every write's table and result (to count writes per check)."""

    def __init__(self, writer: Any):
        self.writer = writer
        self.writes: list[tuple[str, Any]] = []

    def write(self, dataset: str, table: str, rows: Any, **kwargs: Any) -> Any:
        result = self.writer.write(dataset, table, rows, **kwargs)
        self.writes.append((table, result))
        return result


@pytest.fixture
def bq(bq_client):
    return bq_client


@pytest.fixture
async def env(bq):
    settings = make_settings(bq.project, central_dataset=f"organizations_{uuid.uuid4().hex[:8]}")
    assert bootstrap(bq, settings).ok
    services = LlmTestServices(settings, bq, DictCredentials({}))
    counting = CountingWriter(services.writer)
    services.__dict__["writer"] = counting
    yield services, counting
    await services.aclose()


def dq_rows(bq, settings, org: str, run_id: str) -> dict[str, dict[str, Any]]:
    job = bq.query(f"SELECT * FROM `{bq.project}.{settings.central_dataset}.{DQ_TABLE}` "
                   "WHERE org_slug = @org AND run_id = @run",
                   job_config=bigquery.QueryJobConfig(query_parameters=[
                       bigquery.ScalarQueryParameter("org", "STRING", org),
                       bigquery.ScalarQueryParameter("run", "STRING", run_id)]))
    rows = [dict(r) for r in job.result()]
    by_check = {r["check_name"]: r for r in rows}
    assert len(by_check) == len(rows), "one row per rule"
    return by_check


async def test_check_pipeline_and_cli_record_one_row_per_rule_with_a_planted_failure(env, bq, monkeypatch):
    services, counting = env
    settings = services.settings
    org, other = new_org(bq, settings, "focus_dq"), new_org(bq, settings, "focus_dq")
    for slug in (org, other):
        seed_sources(services, slug)
        await map_llm(services, slug, sources=("openai",))
    counting.writes.clear()

    # The pipeline on a conforming table: every rule PASS, one streaming insert for all of them.
    params = {"start_date": D1, "end_date": D2}
    result, _, context = await run_pipeline("focus/check/conformance", org, services, params)
    assert result.status is RunStatus.SUCCESS, result.error
    assert result.step("check_focus").result["dq_results"] == RULE_COUNT
    assert [(t, w.method, w.load_jobs) for t, w in counting.writes] == [(DQ_TABLE, "streaming", 0)]
    clean = dq_rows(bq, settings, org, context.run_id)
    assert set(clean) == {"focus.presence", *(f"focus.{r.rule_id}" for r in RULES)}
    for row in clean.values():
        assert (row["org_slug"], row["status"], row["failed_rows"], row["severity"]) == (org, "PASS", 0, "INFO")
        assert row["pipeline_id"] == context.pipeline_id and row["step_id"] == "check_focus"
        assert row["pipeline_logging_id"] == pipeline_logging_id(context.run_id, 1)
        assert row["target_table"] == f"{settings.org_dataset(org)}.focus_cost_daily"
    assert clean["focus.not_null.BilledCost"]["check_type"] == "not_null"
    assert clean["focus.currency.BillingCurrency"]["actual_value"] == "0 violating row(s) of 6"

    # Plant a defect in one row of the org: the next check's row for that rule FAILs with its count.
    table = f"`{bq.project}.{settings.org_dataset(org)}.focus_cost_daily`"
    bq.query(f"UPDATE {table} SET BillingCurrency = 'usd' WHERE x_OrgSlug = @org AND x_TokenType = 'output'",
             job_config=bigquery.QueryJobConfig(query_parameters=[
                 bigquery.ScalarQueryParameter("org", "STRING", org)])).result()
    counting.writes.clear()
    failed, _, bad_context = await run_pipeline("focus/check/conformance", org, services, params)
    assert failed.status is RunStatus.FAILED and failed.error.code == "FOCUS_NONCONFORMANT"
    assert len(counting.writes) == 1
    bad = dq_rows(bq, settings, org, bad_context.run_id)
    assert len(bad) == RULE_COUNT
    defect = bad["focus.currency.BillingCurrency"]
    assert (defect["status"], defect["failed_rows"], defect["severity"]) == ("FAIL", 2, "ERROR")
    assert defect["actual_value"] == "2 violating row(s) of 6" and "ISO 4217" in defect["message"]
    assert {name for name, row in bad.items() if row["status"] == "FAIL"} == {"focus.currency.BillingCurrency"}

    # The CLI: its own run id, the same rows for the org; the other org's check records only its own rows.
    for key, value in {"BIGQUERY_EMULATOR_HOST": settings.bigquery_emulator_host, "GCP_PROJECT_ID": bq.project,
                       "ENVIRONMENT": settings.environment.value, "CENTRAL_DATASET": settings.central_dataset}.items():
        monkeypatch.setenv(key, value)
    from convergence.commands.focus import focus
    from convergence.settings import reset_settings

    reset_settings()
    try:
        cli = CliRunner().invoke(focus, ["check", org, "--start-date", D1, "--end-date", D2, "--json"])
        assert cli.exit_code == 1, (cli.output, cli.exception)
        # The group is invoked without the CLI's logging set-up: the writer's log line lands before the JSON.
        recorded = json.loads(cli.output[cli.output.index("{\n"):])["recorded"]
        assert recorded["rows"] == RULE_COUNT and recorded["run_id"].startswith("focus_check_")
        cli_rows = dq_rows(bq, settings, org, recorded["run_id"])
        assert cli_rows["focus.currency.BillingCurrency"]["status"] == "FAIL"
        assert cli_rows["focus.currency.BillingCurrency"]["failed_rows"] == 2
        assert cli_rows["focus.currency.BillingCurrency"]["pipeline_id"] is None

        ok = CliRunner().invoke(focus, ["check", other])
        assert ok.exit_code == 0, (ok.output, ok.exception)
        run_id = ok.output.rsplit("(run ", 1)[1].split(")")[0]
        assert {r["status"] for r in dq_rows(bq, settings, other, run_id).values()} == {"PASS"}
        assert not dq_rows(bq, settings, org, run_id), "another org's check wrote rows of this org"

        unrecorded = CliRunner().invoke(focus, ["check", other, "--no-record"])
        assert unrecorded.exit_code == 0 and "Recorded" not in unrecorded.output

        # An org without a FOCUS table: one FAIL row saying so.
        empty = new_org(bq, settings, "focus_dq")
        missing = CliRunner().invoke(focus, ["check", empty, "--json"])
        assert missing.exit_code == 1, (missing.output, missing.exception)
        run_id = json.loads(missing.output[missing.output.index("{\n"):])["recorded"]["run_id"]
        assert {(name, r["status"]) for name, r in dq_rows(bq, settings, empty, run_id).items()} == {
            ("focus.table", "FAIL")}
    finally:
        reset_settings()
