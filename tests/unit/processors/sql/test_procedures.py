"""Stored procedures on the BigQuery emulator: the file <-> routine catalog (sync creates, skips what is
unchanged, re-creates what changed), the `convergence procedures` commands, and generic.procedure_executor
through the SaaS subscription cost pipeline (daily amortised costs that add up to the monthly amounts)."""

from __future__ import annotations

import math
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from convergence.pipeline import PermanentStepError, RunStatus
from convergence.processors.sql.procedures import ProcedureCatalog
from tests.support.generic import TestServices, make_settings, new_org, query, run

pytestmark = [pytest.mark.emulator]

PROC_A = """CREATE OR REPLACE PROCEDURE `{project}.{dataset}.sp_double`(p_n INT64)
BEGIN
  -- demo procedure: multiplies a number
  SELECT p_n * %d AS result;
END;
"""
PROC_B = """CREATE OR REPLACE PROCEDURE `{project}.{dataset}.sp_greet`(p_name STRING, p_day DATE)
BEGIN
  SELECT CONCAT('hello ', p_name) AS greeting, p_day AS day;
END;
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    configs = tmp_path / "configs"
    folder = configs / "system" / "procedures" / "demo"
    folder.mkdir(parents=True)
    (folder / "sp_double.sql").write_text(PROC_A % 2)
    (folder / "sp_greet.sql").write_text(PROC_B)
    return configs


def test_sync_creates_then_skips_unchanged_then_recreates_on_change(local_stack, tree):
    settings = make_settings(local_stack, configs_dir=tree)
    services = TestServices(settings)
    catalog = ProcedureCatalog(services.bigquery, settings, dataset=f"procs_{uuid.uuid4().hex[:8]}")

    assert catalog.sync() == {"created": ["sp_double", "sp_greet"], "updated": [], "unchanged": [], "failed": [],
                              "without_file": []}
    assert catalog.call("sp_double", [("p_n", "INT64", 21)]) == [{"result": 42}]
    assert catalog.call("sp_greet", [("p_name", "STRING", "acme_corp"), ("p_day", "DATE", date(2025, 3, 1))]) == [
        {"greeting": "hello acme_corp", "day": date(2025, 3, 1)}]
    with pytest.raises(PermanentStepError) as refused:  # a value that could carry SQL never becomes a literal
        catalog.call("sp_greet", [("p_name", "STRING", "x'); DROP TABLE t; --"), ("p_day", "DATE", date(2025, 3, 1))])
    assert refused.value.code == "INVALID_PARAMETERS"

    assert catalog.sync()["unchanged"] == ["sp_double", "sp_greet"]
    before = catalog.get("sp_greet")["modified"]

    (tree / "system" / "procedures" / "demo" / "sp_double.sql").write_text(PROC_A % 3)
    report = catalog.sync()
    assert report["updated"] == ["sp_double"] and report["unchanged"] == ["sp_greet"]
    assert catalog.call("sp_double", [("p_n", "INT64", 21)]) == [{"result": 63}]
    assert catalog.get("sp_greet")["modified"] == before  # not touched

    assert catalog.sync(force=True)["updated"] == ["sp_double", "sp_greet"]
    listed = {item["name"]: item for item in catalog.list()}
    assert listed["sp_double"]["in_sync"] and listed["sp_greet"]["in_sync"]

    (tree / "system" / "procedures" / "demo" / "sp_greet.sql").unlink()
    assert catalog.sync()["without_file"] == ["sp_greet"]  # reported, never deleted by sync
    assert catalog.delete("sp_greet") and not catalog.delete("sp_greet")


def test_a_file_must_create_the_procedure_it_is_named_after(local_stack, tree):
    (tree / "system" / "procedures" / "demo" / "sp_other.sql").write_text(PROC_A.replace("sp_double", "sp_evil") % 2)
    settings = make_settings(local_stack, configs_dir=tree)
    catalog = ProcedureCatalog(TestServices(settings).bigquery, settings, dataset=f"procs_{uuid.uuid4().hex[:8]}")
    report = catalog.sync()
    assert report["created"] == ["sp_double", "sp_greet"]
    assert len(report["failed"]) == 1 and report["failed"][0].startswith("sp_other: ")
    assert "must start by creating procedure" in report["failed"][0]


def test_procedures_cli(local_stack, tree, monkeypatch):
    from convergence.commands.procedures import procedures
    from convergence.settings import reset_settings

    dataset = f"procs_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CONFIGS_DIR", str(tree))
    monkeypatch.setenv("ENVIRONMENT", "local")
    reset_settings()
    try:
        runner = CliRunner()

        def invoke(*args: str) -> str:
            outcome = runner.invoke(procedures, list(args), catch_exceptions=False)
            assert outcome.exit_code == 0, outcome.output
            return outcome.output

        assert "sp_double" in invoke("files") and "2 file(s)" in invoke("files")
        assert "2 created" in invoke("sync", "--dataset", dataset)
        assert "2 unchanged" in invoke("sync", "--dataset", dataset)
        assert "2 updated" in invoke("sync", "--force", "--dataset", dataset)
        assert "in sync" in invoke("list", "--dataset", dataset)
        assert '"name": "p_n"' in invoke("get", "sp_double", "--dataset", dataset)
        assert "created sp_greet" in invoke("put", "sp_greet", "--dataset", dataset)
        assert "deleted sp_greet" in invoke("delete", "sp_greet", "--yes", "--dataset", dataset)
        missing = runner.invoke(procedures, ["get", "sp_greet", "--dataset", dataset])
        assert missing.exit_code != 0 and "PROCEDURE_NOT_FOUND" in missing.output
    finally:
        reset_settings()


# -- SaaS subscription costs --------------------------------------------------------------------------------

SUBSCRIPTIONS = [
    # id, provider, plan, seats, unit price per cycle, cycle, start, end, status
    ("sub_slack", "slack", "pro", 10, "8.75", "monthly", "2025-01-01", None, "active"),
    ("sub_github", "github", "team", 5, "48", "annual", "2024-06-15", None, "active"),
    ("sub_notion", "notion", "plus", 3, "10", "monthly", "2025-03-16", "2025-04-10", "cancelled"),
    ("sub_figma", "figma", "org", 2, "180", "annual", "2025-04-20", None, "active"),
    ("sub_zoom", "zoom", "business", 4, "21.99", "quarterly", "2025-02-01", None, "active"),
    ("sub_gone", "miro", "team", 9, "99", "monthly", "2025-01-01", None, "deleted"),
]
# Expected cost per subscription and month: a whole month is price x seats / months per cycle; a partial
# month is pro rata by day (notion: 16 of 31 days in March, 10 of 30 in April; figma: 11 of 30 in April).
EXPECTED = {
    ("sub_slack", "2025-03"): 87.5, ("sub_slack", "2025-04"): 87.5,
    ("sub_github", "2025-03"): 20.0, ("sub_github", "2025-04"): 20.0,
    ("sub_notion", "2025-03"): 30 * 16 / 31, ("sub_notion", "2025-04"): 30 * 10 / 30,
    ("sub_figma", "2025-04"): 30 * 11 / 30,
    ("sub_zoom", "2025-03"): 4 * 21.99 / 3, ("sub_zoom", "2025-04"): 4 * 21.99 / 3,
}


def _seed_subscriptions(services, org: str) -> None:
    from convergence.processors.generic._bq import ensure_table

    repo = services.settings.configs_dir.parent
    ensure_table(services.bigquery, services.settings, services.org_dataset(org), "saas_subscriptions",
                 repo / "configs/saas_subscription/schemas/saas_subscriptions.json")
    rows = [{"subscription_id": s[0], "org_slug": org, "provider": s[1], "plan_name": s[2], "quantity": s[3],
             "unit_price": s[4], "currency": "USD", "billing_cycle": s[5], "start_date": s[6], "end_date": s[7],
             "status": s[8]} for s in SUBSCRIPTIONS]
    services.writer.write(services.org_dataset(org), "saas_subscriptions", rows, mode="overwrite", org_slug=org)


def _monthly_costs(services, org: str) -> dict[tuple[str, str], float]:
    table = f"`{services.bigquery.project}.{services.org_dataset(org)}.saas_subscription_cost_daily`"
    rows = query(services.bigquery, f"SELECT subscription_id, FORMAT_DATE('%Y-%m', cost_date) AS month, "
                                    f"SUM(daily_cost) AS total FROM {table} GROUP BY 1, 2")  # noqa: S608
    return {(r["subscription_id"], r["month"]): float(r["total"]) for r in rows}


@pytest.fixture
async def saas(local_stack):
    # A central dataset of the test's own, so the procedure is created by the pipeline on first use.
    settings = make_settings(local_stack, central_dataset=f"organizations_{uuid.uuid4().hex[:8]}")
    services = TestServices(settings)
    yield services
    await services.aclose()


async def test_saas_pipeline_daily_costs_sum_to_the_monthly_amounts(saas):
    services = saas
    org = new_org("saas")
    _seed_subscriptions(services, org)
    window = {"start_date": "2025-03-01", "end_date": "2025-04-30"}

    result, _ = await run("saas_subscription/costs/saas_cost", services, org, parameters=window)
    assert result.status is RunStatus.SUCCESS, result.error
    step = result.steps[0]
    assert step.result["procedure_created"] is True  # created from configs/system/procedures on first use
    days = 31 + 30 + 31 + 30 + 16 + 10 + 11 + 31 + 30  # slack, github, notion, figma, zoom
    assert step.rows_processed == days

    costs = _monthly_costs(services, org)
    assert set(costs) == set(EXPECTED)  # nothing for the deleted subscription, nothing before figma starts
    for key, expected in EXPECTED.items():
        assert math.isclose(costs[key], expected, abs_tol=1e-6), (key, costs[key], expected)
    assert math.isclose(float(step.result["total_cost"]), sum(EXPECTED.values()), abs_tol=1e-5)

    # Idempotent per range: a second run replaces the range, nothing doubles.
    again, _ = await run("saas_subscription/costs/saas_cost", services, org, parameters=window)
    assert again.status is RunStatus.SUCCESS and "procedure_created" not in again.steps[0].result
    assert again.steps[0].rows_processed == days
    assert _monthly_costs(services, org) == costs

    # A narrower re-run touches only its own range.
    april = {"start_date": "2025-04-01", "end_date": "2025-04-30"}
    narrow, _ = await run("saas_subscription/costs/saas_cost", services, org, parameters=april)
    assert narrow.status is RunStatus.SUCCESS
    assert _monthly_costs(services, org) == costs


async def test_saas_pipeline_defaults_to_the_current_month(saas):
    services = saas
    org = new_org("saas")
    _seed_subscriptions(services, org)
    result, _ = await run("saas_subscription/costs/saas_cost", services, org)
    assert result.status is RunStatus.SUCCESS, result.error
    today = date.today()
    first = today.replace(day=1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    assert (result.steps[0].result["start_date"], result.steps[0].result["end_date"]) == (
        first.isoformat(), last.isoformat())
    costs = _monthly_costs(services, org)
    month = first.strftime("%Y-%m")
    assert math.isclose(costs[("sub_slack", month)], 87.5, abs_tol=1e-6)
    assert math.isclose(costs[("sub_github", month)], 20.0, abs_tol=1e-6)


async def test_procedure_arguments_are_checked_before_bigquery(saas):
    from tests.support.generic import pipeline

    services = saas
    org = new_org("saas")
    step = {"step_id": "call_it", "ps_type": "generic.procedure_executor", "config": {
        "procedure": "calculate_subscription_cost", "arguments": [
            {"name": "p_project_id", "type": "STRING", "value": "{project_id}"},
            {"name": "p_dataset_id", "type": "STRING", "value": "{org_dataset}"},
            {"name": "p_org_slug", "type": "STRING", "value": "{org_slug}"},
            {"name": "p_start_date", "type": "DATE", "value": "{start_date}"},
            {"name": "p_end_date", "type": "DATE", "value": "2025-13-45'); DROP TABLE x; --"}]}}
    result, _ = await run(pipeline([step]), services, org, parameters={"start_date": "2025-03-01"})
    error = result.steps[0].error
    assert result.status is RunStatus.FAILED and error.code == "INVALID_PARAMETERS" and "p_end_date" in error.message
