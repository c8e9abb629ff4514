"""FOCUS unified cost view on the emulator: source cost tables seeded with hand-checkable rows, the real
focus pipelines (loader + executor), the conformance check (function and CLI) on the produced rows and
on planted violations of every rule."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner
from google.cloud import bigquery

from convergence.pipeline import RunStatus
from convergence.processors.focus.conformance import RULES, check, format_report
from tests.support.llm import (
    DictCredentials,
    LlmTestServices,
    make_settings,
    new_org,
    repo_path,
    run_pipeline,
)

pytestmark = [pytest.mark.emulator]

D1, D2 = "2026-03-02", "2026-03-03"
NOW = "2026-03-04T00:00:00+00:00"
OPENAI_BILLED = "configs/openai/cost/schemas/openai_billed_cost_daily_raw.json"
OPENAI_COST = "configs/openai/cost/schemas/openai_cost_daily.json"
ANTHROPIC_BILLED = "configs/anthropic/schemas/anthropic_billed_cost_daily_raw.json"
ANTHROPIC_COST = "configs/anthropic/schemas/anthropic_cost_daily.json"
FOCUS_SCHEMA = "configs/focus/schemas/focus_cost_daily.json"


@pytest.fixture
def bq(bq_client):
    return bq_client


@pytest.fixture
async def env(bq):
    settings = make_settings(bq.project)
    org = new_org(bq, settings, "focus")
    services = LlmTestServices(settings, bq, DictCredentials({}))
    yield services, org
    await services.aclose()


def write(services, org, table, schema, rows):
    services.writer.write(services.settings.org_dataset(org), table, rows, mode="append", schema_path=schema,
                          org_slug=org)


def openai_billed(day, line_item, model, token_type, amount, quantity=None):
    return {"org_slug": None, "cost_date": day, "bucket_start": f"{day}T00:00:00+00:00",
            "bucket_end": f"{_next(day)}T00:00:00+00:00", "project_id": "proj_a", "line_item": line_item,
            "model": model, "model_base": model, "token_type": token_type, "amount_usd": amount, "currency": "usd",
            "quantity": quantity, "quantity_unit": "tokens" if quantity else None, "run_id": "seed",
            "ingested_at": NOW}


def _next(day: str) -> str:
    d = date.fromisoformat(day)
    return date.fromordinal(d.toordinal() + 1).isoformat()


def openai_cost(day, model, priced=True, **tokens_costs):
    row = {"org_slug": None, "cost_date": day, "project_id": "proj_a", "model": model, "model_base": model,
           "batch": False, "service_tier": "default", "is_priced": priced, "num_model_requests": 1,
           "input_uncached_tokens": 0, "input_cached_tokens": 0, "input_cache_write_tokens": 0, "output_tokens": 0,
           "total_tokens": 0, "currency": "USD", "run_id": "seed", "calculated_at": NOW}
    row.update(tokens_costs)
    return row


def anthropic_billed(day, cost_type, model, token_type, amount):
    return {"org_slug": None, "cost_date": day, "bucket_start": f"{day}T00:00:00+00:00",
            "bucket_end": f"{_next(day)}T00:00:00+00:00", "workspace_id": "wrk_1", "description": None,
            "cost_type": cost_type, "model": model, "model_base": model, "token_type": token_type,
            "service_tier": "standard", "context_window": "0-200k", "inference_geo": "us",
            "amount_cents": str(Decimal(amount) * 100), "amount_usd": amount, "currency": "USD", "run_id": "seed",
            "ingested_at": NOW}


def anthropic_cost(day, model, **values):
    row = {"org_slug": None, "cost_date": day, "workspace_id": "wrk_1", "model": model, "model_base": model,
           "service_tier": "standard", "context_window": "0-200k", "is_priced": True, "uncached_input_tokens": 0,
           "cache_read_input_tokens": 0, "cache_creation_5m_input_tokens": 0, "cache_creation_1h_input_tokens": 0,
           "output_tokens": 0, "total_tokens": 0, "web_search_requests": 0, "currency": "USD", "run_id": "seed",
           "calculated_at": NOW}
    row.update(values)
    return row


# D1 has billed rows (they win), D2 only calculated ones (they fill in; the unpriced row is left out).
OPENAI_BILLED_D1 = [
    openai_billed(D1, "gpt-4o-2024-08-06, input", "gpt-4o-2024-08-06", "input", "3.0864175", "1234567"),
    openai_billed(D1, "gpt-4o-2024-08-06, output", "gpt-4o-2024-08-06", "output", "0.98765", "98765"),
    openai_billed(D1, "web search tool calls", None, "other", "0.25"),
]
OPENAI_COST_ROWS = [
    openai_cost(D1, "gpt-4o-2024-08-06", input_uncached_tokens=1_234_567, input_cost="3.0864175",
                output_tokens=98_765, output_cost="0.98765", total_cost="4.0740675"),
    openai_cost(D2, "gpt-4o-2024-08-06", input_uncached_tokens=400_000, input_cost="1.0", input_cached_tokens=1_000,
                cached_input_cost="0.00125", cache_write_cost="0", output_tokens=20_000, output_cost="0.2",
                total_cost="1.20125"),
    openai_cost(D2, "gpt-9-preview", priced=False, input_uncached_tokens=123),
]
ANTHROPIC_BILLED_D1 = [
    anthropic_billed(D1, "tokens", "claude-sonnet-4-20250514", "uncached_input_tokens", "1.5"),
    anthropic_billed(D1, "web_search", None, None, "0.02"),
]
ANTHROPIC_COST_ROWS = [
    anthropic_cost(D2, "claude-sonnet-4-20250514", uncached_input_tokens=100_000, uncached_input_cost="0.3",
                   output_tokens=10_000, output_cost="0.15", web_search_requests=2, web_search_cost="0.02",
                   cache_read_cost="0", cache_write_5m_cost="0", cache_write_1h_cost="0", total_cost="0.47"),
]


def seed_sources(services, org):
    write(services, org, "openai_billed_cost_daily_raw", OPENAI_BILLED, OPENAI_BILLED_D1)
    write(services, org, "openai_cost_daily", OPENAI_COST, OPENAI_COST_ROWS)
    write(services, org, "anthropic_billed_cost_daily_raw", ANTHROPIC_BILLED, ANTHROPIC_BILLED_D1)
    write(services, org, "anthropic_cost_daily", ANTHROPIC_COST, ANTHROPIC_COST_ROWS)


def focus_rows(bq, settings, org, table="focus_cost_daily") -> list[dict[str, Any]]:
    job = bq.query(f"SELECT * FROM `{bq.project}.{settings.org_dataset(org)}.{table}` WHERE x_OrgSlug = @org "
                   "ORDER BY x_SourcePipeline, x_ChargeDate, SkuId, x_TokenType",
                   job_config=bigquery.QueryJobConfig(query_parameters=[
                       bigquery.ScalarQueryParameter("org", "STRING", org)]))
    return [dict(r) for r in job.result()]


def totals(rows, provider):
    mine = [r for r in rows if r["ServiceProviderName"] == provider]
    return (sum((r["BilledCost"] for r in mine), Decimal(0)), sum((r["EffectiveCost"] for r in mine), Decimal(0)),
            len(mine))


async def map_llm(services, org, start=D1, end=D2, sources=("openai", "anthropic")):
    for source in sources:
        result, _, _ = await run_pipeline(f"focus/cost/{source}", org, services, {"start_date": start, "end_date": end})
        assert result.status is RunStatus.SUCCESS, result.error


async def test_llm_costs_map_to_focus_and_reruns_leave_one_copy(env, bq):
    services, org = env
    seed_sources(services, org)
    result, _, _ = await run_pipeline("focus/cost/openai", org, services, {"start_date": D1, "end_date": D2})
    assert result.status is RunStatus.SUCCESS, result.error
    step = result.step("map_openai")
    assert step.rows_processed == 6 and step.result["rows_by_basis"] == "billed=3,calculated=3"
    assert step.result["billed_cost"] == "4.32"
    await map_llm(services, org, sources=("anthropic",))
    rows = focus_rows(bq, services.settings, org)

    # Provider totals: BilledCost equals the billed source totals exactly; EffectiveCost adds the calculated days.
    billed_openai = sum(Decimal(r["amount_usd"]) for r in OPENAI_BILLED_D1)
    billed_anthropic = sum(Decimal(r["amount_usd"]) for r in ANTHROPIC_BILLED_D1)
    assert totals(rows, "OpenAI") == (billed_openai, billed_openai + Decimal("1.20125"), 6)
    assert totals(rows, "Anthropic") == (billed_anthropic, billed_anthropic + Decimal("0.47"), 5)

    for row in rows:
        assert row["ServiceCategory"] == "AI and Machine Learning"
        assert row["ServiceSubcategory"] == "Generative AI"
        assert row["ChargeCategory"] == "Usage" and row["ChargeFrequency"] == "Usage-Based"
        assert row["BillingCurrency"] == row["PricingCurrency"] == "USD" and row["x_OrgSlug"] == org
        assert row["PricingCurrencyEffectiveCost"] == row["EffectiveCost"]
        # No name in the cost tables nor in the step config: the id itself.
        assert row["SubAccountName"] == row["SubAccountId"] and row["BillingAccountName"] == row["BillingAccountId"]
        assert row["ProviderName"] == row["PublisherName"] == row["ServiceProviderName"] == row["HostProviderName"]
        assert row["BillingPeriodStart"] == datetime.fromisoformat("2026-03-01T00:00:00+00:00")
        assert row["BillingPeriodEnd"] == datetime.fromisoformat("2026-04-01T00:00:00+00:00")
        assert row["ChargePeriodEnd"] - row["ChargePeriodStart"] == datetime(2026, 1, 2) - datetime(2026, 1, 1)

    openai = {(r["x_ChargeDate"].isoformat(), r["x_CostBasis"], r["SkuId"], r["x_TokenType"]): r
              for r in rows if r["x_SourcePipeline"] == "openai"}
    billed_input = openai[(D1, "billed", "gpt-4o-2024-08-06", "input")]
    assert billed_input["BilledCost"] == billed_input["EffectiveCost"] == billed_input["ListCost"] == \
        Decimal("3.0864175")
    assert billed_input["ConsumedQuantity"] == Decimal(1_234_567) and billed_input["ConsumedUnit"] == "tokens"
    assert billed_input["SubAccountId"] == "proj_a" and billed_input["SubAccountType"] == "Project"
    assert billed_input["ChargeDescription"] == "gpt-4o-2024-08-06, input"
    assert openai[(D1, "billed", "web search tool calls", "other")]["BilledCost"] == Decimal("0.25")
    # D2 has no billed rows: calculated ones, BilledCost 0, tokens as quantity; the unpriced model is left out.
    calc_input = openai[(D2, "calculated", "gpt-4o-2024-08-06", "input")]
    assert calc_input["BilledCost"] == 0 and calc_input["EffectiveCost"] == calc_input["ListCost"] == Decimal("1.0")
    assert calc_input["ConsumedQuantity"] == Decimal(400_000) and calc_input["ConsumedUnit"] == "Tokens"
    assert calc_input["PricingQuantity"] == Decimal(400_000) and calc_input["PricingUnit"] == "Tokens"
    assert openai[(D2, "calculated", "gpt-4o-2024-08-06", "cached input")]["EffectiveCost"] == Decimal("0.00125")
    assert (D2, "calculated", "gpt-4o-2024-08-06", "cache write") not in openai  # no tokens, no cost
    assert not any(k[2] == "gpt-9-preview" for k in openai)
    assert not any(k[0] == D1 and k[1] == "calculated" for k in openai)

    anthropic = {(r["x_ChargeDate"].isoformat(), r["x_TokenType"]): r for r in rows
                 if r["x_SourcePipeline"] == "anthropic"}
    search = anthropic[(D2, "web_search")]
    assert search["ConsumedQuantity"] == 2 and search["ConsumedUnit"] == "Requests"
    assert anthropic[(D1, "web_search")]["SkuMeter"] == "web_search"
    assert anthropic[(D1, "uncached_input_tokens")]["RegionId"] == "us"
    assert anthropic[(D1, "uncached_input_tokens")]["SubAccountType"] == "Workspace"

    # Re-runs (both sources, and one day of one source) leave exactly one copy; the other source is untouched.
    await map_llm(services, org)
    await map_llm(services, org, start=D2, end=D2, sources=("openai",))
    again = focus_rows(bq, services.settings, org)
    assert len(again) == len(rows) == 11
    assert totals(again, "OpenAI") == totals(rows, "OpenAI")
    assert totals(again, "Anthropic") == totals(rows, "Anthropic")

    # The billed report for D2 arrives: the next run replaces D2's calculated rows by billed ones.
    write(services, org, "openai_billed_cost_daily_raw", OPENAI_BILLED,
          [openai_billed(D2, "gpt-4o-2024-08-06, input", "gpt-4o-2024-08-06", "input", "1.21")])
    await map_llm(services, org, start=D2, end=D2, sources=("openai",))
    late = [r for r in focus_rows(bq, services.settings, org) if r["x_SourcePipeline"] == "openai"]
    assert {(r["x_ChargeDate"].isoformat(), r["x_CostBasis"]) for r in late} == {(D1, "billed"), (D2, "billed")}
    assert totals(late, "OpenAI")[:2] == (billed_openai + Decimal("1.21"), billed_openai + Decimal("1.21"))
    assert len([r for r in focus_rows(bq, services.settings, org) if r["x_SourcePipeline"] == "anthropic"]) == 5

    # The produced rows conform.
    report = check(bq, services.settings, org)
    assert report.ok, format_report(report)
    assert report.rows_checked == 9 and report.rules_checked == len(RULES) + 1


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, datetime | date):
            value = value.isoformat()
        elif isinstance(value, Decimal):
            value = str(value)
        out[key] = value
    return out


# One planted row per rule: a mutation of a conforming row.
def _plants(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    shifted_start = "2026-04-15T00:00:00+00:00"
    plants: dict[str, dict[str, Any]] = {
        rule.rule_id: {rule.rule_id.split(".", 1)[1]: None} for rule in RULES if rule.rule_id.startswith("not_null.")}
    plants.update({
        "allowed.ChargeCategory": {"ChargeCategory": "Refund"},
        "allowed.ChargeClass": {"ChargeClass": "Fix"},
        "allowed.ChargeFrequency": {"ChargeFrequency": "Daily"},
        "combo.Purchase_not_UsageBased": {"ChargeCategory": "Purchase", "ConsumedQuantity": None,
                                          "ConsumedUnit": None},
        "allowed.PricingCategory": {"PricingCategory": "Cheap"},
        "combo.PricingCategory_null_for_Tax": {"ChargeCategory": "Tax", "ConsumedQuantity": None,
                                               "ConsumedUnit": None},
        "combo.PricingCategory_set_for_Usage_Purchase": {"PricingCategory": None},
        "allowed.ServiceCategory": {"ServiceCategory": "AI"},
        "allowed.ServiceSubcategory": {"ServiceSubcategory": "Chatbots"},
        "combo.ServiceName_one_subcategory": {"ServiceSubcategory": "Bots"},
        "combo.SkuId_null_for_Tax": {"ChargeCategory": "Tax", "PricingCategory": None, "ConsumedQuantity": None,
                                     "ConsumedUnit": None},
        "combo.SubAccountName_with_id": {"SubAccountName": None},
        "combo.BillingAccountName_with_id": {"BillingAccountName": None},
        "combo.ConsumedQuantity_only_Usage": {"ChargeCategory": "Credit"},
        "combo.ConsumedUnit_with_quantity": {"ConsumedUnit": None},
        "combo.PricingUnit_with_quantity": {"PricingUnit": None},
        "period.charge_order": {"ChargePeriodEnd": base["ChargePeriodStart"]},
        "period.billing_order": {"BillingPeriodEnd": base["BillingPeriodStart"]},
        "period.charge_within_billing": {"ChargePeriodStart": shifted_start,
                                         "ChargePeriodEnd": "2026-04-16T00:00:00+00:00"},
        "currency.BillingCurrency": {"BillingCurrency": "usd"},
        "currency.PricingCurrency": {"PricingCurrency": "US"},
        "format.Tags": {"Tags": "team=ml"},
    })
    return plants


async def test_conformance_catches_a_planted_violation_of_every_rule(env, bq, monkeypatch):
    services, org = env
    seed_sources(services, org)
    await map_llm(services, org, sources=("openai",))
    settings = services.settings
    dataset = settings.org_dataset(org)
    good = [r for r in focus_rows(bq, settings, org) if r["ConsumedQuantity"] is not None]
    base = _jsonable(good[0])

    # A copy of the FOCUS table with every column NULLABLE, so NULLs can be planted too.
    fields = json.loads(repo_path(FOCUS_SCHEMA).read_text())
    loose = f"{bq.project}.{dataset}.focus_loose"
    bq.create_table(bigquery.Table(loose, schema=[bigquery.SchemaField(f["name"], f["type"], "NULLABLE")
                                                  for f in fields]))
    plants = _plants(base)
    assert set(plants) == {r.rule_id for r in RULES}, "every rule has a planted violation"
    payload = [_jsonable(r) for r in good] + [{**base, **change, "ChargeDescription": rule_id}
                                              for rule_id, change in plants.items()]
    assert not bq.insert_rows_json(loose, payload)

    clean = check(bq, settings, org, table="focus_cost_daily")
    assert clean.ok, format_report(clean)
    report = check(bq, settings, org, table="focus_loose")
    found = {v.rule_id: v for v in report.violations}
    missing = sorted(set(plants) - set(found))
    assert not missing, f"rules that missed their planted row: {missing}\n{format_report(report)}"
    assert found["allowed.ChargeCategory"].rows == 1 and found["allowed.ChargeCategory"].sample.endswith(
        "allowed.ChargeCategory")
    # The six defects the official validator once found, each caught by its own rule.
    for rule_id in ("not_null.ServiceSubcategory", "combo.SkuId_null_for_Tax", "combo.SubAccountName_with_id",
                    "combo.BillingAccountName_with_id", "not_null.PricingCurrencyEffectiveCost",
                    "not_null.PricingCurrency"):
        assert found[rule_id].rows >= 1 and rule_id in {r.rule_id for r in RULES}
    assert "presence" not in found

    # Presence: a table without the 1.3 provider columns and without BilledCost.
    bare = f"{bq.project}.{dataset}.focus_bare"
    bq.create_table(bigquery.Table(bare, schema=[bigquery.SchemaField(f["name"], f["type"], "NULLABLE")
                                                 for f in fields if f["name"] not in
                                                 ("ServiceProviderName", "HostProviderName", "BilledCost")]))
    presence = check(bq, settings, org, table="focus_bare")
    assert presence.violations[0].rule_id == "presence"
    assert presence.violations[0].sample == "BilledCost, ServiceProviderName, HostProviderName"

    # The CLI: exit 0 on the conforming table, 1 (every violated rule listed) on the planted one. Recording the
    # results in org_meta_dq_results is test_focus_dq.py's (this central dataset is not bootstrapped).
    from convergence.commands.focus import focus
    from convergence.settings import reset_settings

    for key, value in {"BIGQUERY_EMULATOR_HOST": settings.bigquery_emulator_host, "GCP_PROJECT_ID": bq.project,
                       "ENVIRONMENT": settings.environment.value}.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    try:
        ok = CliRunner().invoke(focus, ["check", org, "--start-date", D1, "--end-date", D2, "--no-record"])
        assert ok.exit_code == 0, (ok.output, ok.exception)
        assert "OK: no violation." in ok.output
        bad = CliRunner().invoke(focus, ["check", org, "--table", "focus_loose", "--source", "openai", "--no-record"])
        assert bad.exit_code == 1, (bad.output, bad.exception)
        assert all(f"FAIL {rule_id}:" in bad.output for rule_id in plants)
        as_json = CliRunner().invoke(focus, ["check", org, "--table", "focus_loose", "--json", "--no-record"])
        assert as_json.exit_code == 1 and not json.loads(as_json.output)["ok"]
    finally:
        reset_settings()


GCP_SCHEMA = "configs/gcp/cost/schemas/billing_cost.json"


def gcp_row(start, service, sku, cost, *, credits=0.0, cost_at_list=None, cost_type="regular", invoice="202605",
            labels="[]", amount=None, unit=None):
    begin = datetime.fromisoformat(start)
    return {"usage_date": begin.date().isoformat(), "billing_account_id": "01ABCD-EF2345-678901",
            "service_id": service[:4], "service_description": service, "sku_id": f"SKU-{sku[:6]}",
            "sku_description": sku, "usage_start_time": start,
            "usage_end_time": (begin.replace(hour=begin.hour + 1)).isoformat(), "project_id": "acme-prod",
            "project_name": "Acme Prod", "labels": labels, "location": "us-central1", "region": "us-central1",
            "zone": "us-central1-a", "cost": cost, "currency": "USD", "cost_at_list": cost_at_list,
            "credits_total": credits, "net_cost": cost + credits, "usage_amount": amount, "usage_unit": unit,
            "usage_amount_in_pricing_units": amount, "usage_pricing_unit": unit, "invoice_month": invoice,
            "cost_type": cost_type, "run_id": "seed", "ingested_at": NOW}


GCP_ROWS = [
    gcp_row("2026-05-30T10:00:00+00:00", "Compute Engine", "N2 Instance Core", 12.345678, credits=-2.5,
            cost_at_list=13.0, labels='[{"key": "team", "value": "ml"}, {"key": "env", "value": "prod"}]',
            amount=3600.0, unit="seconds"),
    gcp_row("2026-05-31T20:00:00+00:00", "BigQuery", "Analysis", 0.123456, amount=1.5, unit="tebibytes"),
    gcp_row("2026-05-31T21:00:00+00:00", "Vertex AI", "Gemini 2.5 Pro output", 4.0),
    gcp_row("2026-05-31T22:00:00+00:00", "Tax", "Sales tax", 1.07, cost_type="tax"),
    # 03:00 UTC on June 1 is May 31 in Pacific time: invoiced in May.
    gcp_row("2026-06-01T03:00:00+00:00", "Cloud Storage", "Standard Storage", 0.5, credits=-0.5),
]


async def test_gcp_billing_export_maps_to_focus_with_credit_rows(env, bq):
    services, org = env
    write(services, org, "gcp_billing_daily_raw", GCP_SCHEMA, GCP_ROWS)
    seed_sources(services, org)
    await map_llm(services, org, sources=("openai",))
    params = {"start_date": "2026-05-30", "end_date": "2026-06-01"}
    result, _, _ = await run_pipeline("focus/cost/gcp", org, services, params)
    assert result.status is RunStatus.SUCCESS, result.error
    rows = [r for r in focus_rows(bq, services.settings, org) if r["x_SourcePipeline"] == "gcp"]
    assert len(rows) == 7  # 5 charges + 2 credit rows
    net = sum(Decimal(str(r["net_cost"])) for r in GCP_ROWS)
    assert sum(r["BilledCost"] for r in rows) == net == Decimal("15.039134")
    by = {(r["SkuMeter"] or r["ChargeDescription"], r["ChargeCategory"]): r for r in rows}
    core = by[("N2 Instance Core", "Usage")]
    assert core["BilledCost"] == Decimal("12.345678") and core["ListCost"] == Decimal("13")
    assert core["ServiceCategory"] == "Compute" and core["ServiceProviderName"] == "Google Cloud"
    assert json.loads(core["Tags"]) == {"team": "ml", "env": "prod"}
    assert core["ConsumedQuantity"] == 3600 and core["ConsumedUnit"] == "seconds"
    assert core["SubAccountId"] == "acme-prod" and core["RegionId"] == "us-central1"
    assert core["AvailabilityZone"] == "us-central1-a" and core["BillingAccountId"] == "01ABCD-EF2345-678901"
    credit = by[("N2 Instance Core", "Credit")]
    assert credit["BilledCost"] == credit["EffectiveCost"] == Decimal("-2.5") and credit["ListCost"] == 0
    assert credit["ConsumedQuantity"] is None and credit["PricingCategory"] is None
    tax = by[("Sales tax", "Tax")]
    assert tax["PricingCategory"] is None and tax["ConsumedQuantity"] is None
    assert tax["SkuId"] is None and tax["SkuMeter"] is None and tax["ServiceSubcategory"] == "Other (Other)"
    assert core["ServiceSubcategory"] == "Virtual Machines" and credit["ServiceSubcategory"] == "Virtual Machines"
    assert core["SubAccountName"] == "Acme Prod" and core["BillingAccountName"] == "01ABCD-EF2345-678901"
    assert core["PricingCurrency"] == "USD" and core["PricingCurrencyEffectiveCost"] == core["EffectiveCost"]
    assert credit["PricingCurrencyEffectiveCost"] == Decimal("-2.5")
    assert by[("Gemini 2.5 Pro output", "Usage")]["ServiceCategory"] == "AI and Machine Learning"
    assert by[("Analysis", "Usage")]["ServiceCategory"] == "Analytics"
    storage = by[("Standard Storage", "Usage")]
    assert storage["BillingPeriodStart"] == datetime.fromisoformat("2026-05-01T07:00:00+00:00")
    assert storage["BillingPeriodEnd"] == datetime.fromisoformat("2026-06-01T07:00:00+00:00")

    # Re-run of one day leaves one copy; the OpenAI rows are untouched.
    openai_before = len([r for r in focus_rows(bq, services.settings, org) if r["x_SourcePipeline"] == "openai"])
    again, _, _ = await run_pipeline("focus/cost/gcp", org, services, {"date": "2026-05-31"})
    assert again.status is RunStatus.SUCCESS, again.error
    after = focus_rows(bq, services.settings, org)
    assert sum(r["BilledCost"] for r in after if r["x_SourcePipeline"] == "gcp") == net
    assert len([r for r in after if r["x_SourcePipeline"] == "gcp"]) == 7
    assert len([r for r in after if r["x_SourcePipeline"] == "openai"]) == openai_before == 6

    report = check(bq, services.settings, org)
    assert report.ok, format_report(report)
