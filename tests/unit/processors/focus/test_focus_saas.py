"""FOCUS SaaS source on the emulator: subscriptions costed by the real SaaS pipeline (stored procedure),
mapped by focus/cost/saas into Purchase rows per billing cycle and amortised daily Usage rows; then a
fixture month with all four sources (OpenAI, Anthropic, GCP, SaaS) whose per-provider BilledCost totals
equal the source totals to the cent."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

import pytest

from convergence.pipeline import RunStatus
from convergence.processors.focus.conformance import check, format_report
from tests.support.llm import DictCredentials, LlmTestServices, make_settings, new_org, run_pipeline
from tests.unit.processors.focus.test_focus import (
    ANTHROPIC_BILLED_D1,
    GCP_SCHEMA,
    OPENAI_BILLED_D1,
    focus_rows,
    gcp_row,
    map_llm,
    seed_sources,
    write,
)

pytestmark = [pytest.mark.emulator]

MONTH = {"start_date": "2026-03-01", "end_date": "2026-03-31"}
SUBS_SCHEMA = "configs/saas_subscription/schemas/saas_subscriptions.json"
# (id, provider, plan, seats, unit price, cycle, start, end, status)
SUBSCRIPTIONS = [
    ("sub_slack", "slack", "pro", 10, "8.75", "monthly", "2026-01-15", None, "active"),        # buys Mar 15
    ("sub_github", "github", "team", 5, "48", "annual", "2025-03-31", None, "active"),         # renews Mar 31
    ("sub_notion", "notion", "plus", 3, "10", "monthly", "2026-03-16", "2026-04-10", "cancelled"),  # one cycle
    ("sub_zoom", "zoom", "business", 4, "21.99", "quarterly", "2025-12-01", None, "active"),   # renews Mar 1
    ("sub_cursor", "cursor", "pro", 3, "20", "monthly", "2026-01-31", None, "active"),         # Feb 28, Mar 31
    ("sub_acme", "acme_tool", None, 1, "12.34", "monthly", "2026-02-10", None, "active"),      # unmapped vendor
    ("sub_figma", "figma", "org", 2, "180", "annual", "2025-06-01", None, "active"),           # no purchase in Mar
    ("sub_gone", "miro", "team", 9, "99", "monthly", "2026-01-01", None, "deleted"),           # never costed
]
# Purchases dated in March 2026: price x seats of every cycle that starts in the month.
PURCHASES = {"sub_slack": Decimal("87.50"), "sub_github": Decimal("240"), "sub_notion": Decimal("30"),
             "sub_zoom": Decimal("87.96"), "sub_cursor": Decimal("60"), "sub_acme": Decimal("12.34")}
# Amortised cost of March (calculate_subscription_cost: cycle amount / months per cycle, pro rata by day).
AMORTISED = {"sub_slack": Decimal("87.5"), "sub_github": Decimal("20"), "sub_notion": Decimal(30) * 16 / 31,
             "sub_zoom": Decimal("87.96") / 3, "sub_cursor": Decimal("60"), "sub_acme": Decimal("12.34"),
             "sub_figma": Decimal("30")}
CENT = Decimal("0.01")


@pytest.fixture
def bq(bq_client):
    return bq_client


@pytest.fixture
async def env(bq):
    # A central dataset of the test's own, so the SaaS procedure is created by its pipeline on first use.
    settings = make_settings(bq.project, central_dataset=f"organizations_{uuid.uuid4().hex[:8]}")
    org = new_org(bq, settings, "focus_saas")
    services = LlmTestServices(settings, bq, DictCredentials({}))
    yield services, org
    await services.aclose()


def seed_saas(services, org) -> None:
    rows = [{"subscription_id": s[0], "org_slug": org, "provider": s[1], "plan_name": s[2], "quantity": s[3],
             "unit_price": s[4], "currency": "USD", "billing_cycle": s[5], "start_date": s[6], "end_date": s[7],
             "status": s[8]} for s in SUBSCRIPTIONS]
    write(services, org, "saas_subscriptions", SUBS_SCHEMA, rows)


async def run_ok(path, org, services, params):
    result, _, _ = await run_pipeline(path, org, services, params)
    assert result.status is RunStatus.SUCCESS, result.error
    return result


def source_daily(bq, services, org) -> dict[str, Decimal]:
    table = f"`{bq.project}.{services.settings.org_dataset(org)}.saas_subscription_cost_daily`"
    job = bq.query(f"SELECT subscription_id, SUM(daily_cost) AS total FROM {table} "  # noqa: S608 - test names
                   "WHERE cost_date BETWEEN '2026-03-01' AND '2026-03-31' GROUP BY subscription_id")
    return {r["subscription_id"]: Decimal(str(r["total"])) for r in job.result()}


async def test_saas_subscriptions_map_to_purchase_and_amortised_usage_rows(env, bq):
    services, org = env
    seed_saas(services, org)
    await run_ok("saas_subscription/costs/saas_cost", org, services, MONTH)
    daily = source_daily(bq, services, org)
    assert set(daily) == set(AMORTISED)
    for sub, amount in AMORTISED.items():
        assert daily[sub].quantize(CENT) == amount.quantize(CENT), sub

    result = await run_ok("focus/cost/saas", org, services, MONTH)
    rows = [r for r in focus_rows(bq, services.settings, org) if r["x_SourcePipeline"] == "saas"]
    purchases = [r for r in rows if r["ChargeCategory"] == "Purchase"]
    usage = [r for r in rows if r["ChargeCategory"] == "Usage"]
    assert len(rows) == len(purchases) + len(usage)
    step = result.step("map_saas")
    assert step.rows_processed == len(rows) and step.result["rows_by_basis"] == f"amortized={len(usage)},billed=6"

    # BilledCost = the purchases of the month to the cent; EffectiveCost = the amortised daily costs exactly.
    assert sum(r["BilledCost"] for r in rows) == sum(PURCHASES.values()) == Decimal("517.80")
    assert sum(r["EffectiveCost"] for r in rows) == sum(daily.values())
    assert sum(r["EffectiveCost"] for r in rows).quantize(CENT) == sum(AMORTISED.values()).quantize(CENT)
    assert len(usage) == 31 * 5 + 16 + 31  # whole month for 5 + notion from the 16th + figma

    by_sub = {r["ResourceId"]: r for r in purchases}
    assert {k: v["BilledCost"] for k, v in by_sub.items()} == PURCHASES
    for row in purchases:
        assert row["EffectiveCost"] == 0 and row["ListCost"] == row["ContractedCost"] == row["BilledCost"]
        assert row["ConsumedQuantity"] is None and row["PricingUnit"] == "Seats"
        assert row["PricingQuantity"] * row["ListUnitPrice"] == row["BilledCost"]
        assert row["x_CostBasis"] == "billed" and row["PricingCategory"] == "Standard"
    slack = by_sub["sub_slack"]
    assert slack["ChargeFrequency"] == "Recurring" and slack["x_ChargeDate"] == date(2026, 3, 15)
    assert slack["ChargePeriodStart"] == datetime.fromisoformat("2026-03-15T00:00:00+00:00")
    assert slack["ChargePeriodEnd"] == datetime.fromisoformat("2026-04-15T00:00:00+00:00")
    assert slack["BillingPeriodStart"] == datetime.fromisoformat("2026-03-01T00:00:00+00:00")
    assert slack["ServiceProviderName"] == slack["InvoiceIssuerName"] == slack["HostProviderName"] == "Slack"
    assert slack["ServiceCategory"] == "Business Applications" and slack["PricingQuantity"] == 10
    assert by_sub["sub_notion"]["ChargeFrequency"] == "One-Time"  # the whole subscription is one cycle
    assert by_sub["sub_github"]["ChargePeriodEnd"] == datetime.fromisoformat("2027-03-31T00:00:00+00:00")
    assert by_sub["sub_github"]["ServiceCategory"] == "Developer Tools"
    assert by_sub["sub_zoom"]["ChargePeriodEnd"] == datetime.fromisoformat("2026-06-01T00:00:00+00:00")
    cursor = by_sub["sub_cursor"]  # started on the 31st: renews on the last day of shorter months
    assert cursor["x_ChargeDate"] == date(2026, 3, 31)
    assert cursor["ChargePeriodEnd"] == datetime.fromisoformat("2026-04-30T00:00:00+00:00")
    acme = by_sub["sub_acme"]
    assert acme["ServiceProviderName"] == "acme_tool" and acme["ServiceCategory"] == "Other"

    day = next(r for r in usage if r["ResourceId"] == "sub_slack" and r["x_ChargeDate"] == date(2026, 3, 2))
    assert day["BilledCost"] == 0 and day["EffectiveCost"] == day["ListCost"] > 0
    assert day["ChargeFrequency"] == "Usage-Based" and day["x_CostBasis"] == "amortized"
    assert day["ConsumedQuantity"] == 10 and day["ConsumedUnit"] == "Seats"
    assert day["ChargePeriodEnd"] - day["ChargePeriodStart"] == datetime(2026, 1, 2) - datetime(2026, 1, 1)
    assert not any(r["ResourceId"] == "sub_gone" for r in rows)

    # Re-runs (the month, then one day) leave one copy.
    await run_ok("focus/cost/saas", org, services, MONTH)
    await run_ok("focus/cost/saas", org, services, {"date": "2026-03-15"})
    again = [r for r in focus_rows(bq, services.settings, org) if r["x_SourcePipeline"] == "saas"]
    assert len(again) == len(rows)
    assert sum(r["BilledCost"] for r in again) == Decimal("517.80")
    assert sum(r["EffectiveCost"] for r in again) == sum(daily.values())

    report = check(bq, services.settings, org)
    assert report.ok, format_report(report)
    assert report.rows_checked == len(rows)


FOUR_SOURCES_GCP = [
    gcp_row("2026-03-02T10:00:00+00:00", "Compute Engine", "N2 Instance Core", 12.345678, credits=-2.5,
            cost_at_list=13.0, invoice="202603", amount=3600.0, unit="seconds"),
    gcp_row("2026-03-20T20:00:00+00:00", "BigQuery", "Analysis", 0.123456, invoice="202603"),
    gcp_row("2026-03-31T22:00:00+00:00", "Tax", "Sales tax", 1.07, cost_type="tax", invoice="202603")]


async def map_four_sources(services, org) -> None:
    """The four-source fixture month: OpenAI and Anthropic (2026-03-02/03), GCP and SaaS (March 2026)."""
    seed_sources(services, org)
    write(services, org, "gcp_billing_daily_raw", GCP_SCHEMA, FOUR_SOURCES_GCP)
    seed_saas(services, org)
    await run_ok("saas_subscription/costs/saas_cost", org, services, MONTH)
    await map_llm(services, org, start=MONTH["start_date"], end=MONTH["end_date"])
    for source in ("gcp", "saas"):
        await run_ok(f"focus/cost/{source}", org, services, MONTH)


async def test_four_sources_in_one_month_match_their_source_totals(env, bq):
    services, org = env
    await map_four_sources(services, org)
    gcp = FOUR_SOURCES_GCP

    def by_provider(rows):
        out: dict[str, Decimal] = {}
        for row in rows:
            out[row["ServiceProviderName"]] = out.get(row["ServiceProviderName"], Decimal(0)) + row["BilledCost"]
        return {k: v.quantize(CENT) for k, v in out.items()}

    names = {"slack": "Slack", "github": "GitHub", "notion": "Notion", "zoom": "Zoom", "cursor": "Cursor",
             "acme_tool": "acme_tool"}
    expected = {"OpenAI": sum(Decimal(r["amount_usd"]) for r in OPENAI_BILLED_D1),
                "Anthropic": sum(Decimal(r["amount_usd"]) for r in ANTHROPIC_BILLED_D1),
                "Google Cloud": sum(Decimal(str(r["net_cost"])) for r in gcp)}
    for sub in SUBSCRIPTIONS:
        if sub[0] in PURCHASES:
            expected[names[sub[1]]] = PURCHASES[sub[0]]
    expected["Figma"] = Decimal(0)  # amortised usage only, nothing purchased in March
    expected = {k: v.quantize(CENT) for k, v in expected.items()}
    rows = focus_rows(bq, services.settings, org)
    assert by_provider(rows) == expected
    assert {r["x_SourcePipeline"] for r in rows} == {"openai", "anthropic", "gcp", "saas"}

    # Re-running one source's day leaves every total unchanged.
    await run_ok("focus/cost/saas", org, services, {"date": "2026-03-31"})
    await run_ok("focus/cost/gcp", org, services, {"date": "2026-03-02"})
    after = focus_rows(bq, services.settings, org)
    assert len(after) == len(rows) and by_provider(after) == expected

    report = check(bq, services.settings, org)
    assert report.ok, format_report(report)
