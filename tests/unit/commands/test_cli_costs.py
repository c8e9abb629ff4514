"""`convergence costs ORG --by ... --since ...` on the local stack: sums from the org's FOCUS table, filtered
by org and dates, grouped only by the known names."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner

from convergence.commands.costs import costs
from convergence.warehouse.writer import Writer
from tests.support.llm import make_settings, new_org

pytestmark = [pytest.mark.emulator]
FOCUS_SCHEMA = "configs/focus/schemas/focus_cost_daily.json"


def focus_row(org: str, day: date, provider: str, service: str, model: str | None, cost: str) -> dict:
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    return {
        "BilledCost": cost, "EffectiveCost": cost, "ListCost": cost, "ContractedCost": cost,
        "BillingAccountId": "acct", "BillingCurrency": "USD", "BillingPeriodStart": start.replace(day=1),
        "BillingPeriodEnd": start + timedelta(days=31), "ChargeCategory": "Usage", "ChargePeriodStart": start,
        "ChargePeriodEnd": start + timedelta(days=1), "InvoiceIssuerName": provider, "ProviderName": provider,
        "PublisherName": provider, "ServiceCategory": "AI and Machine Learning", "ServiceName": service,
        "ServiceProviderName": provider, "x_OrgSlug": org, "x_SourcePipeline": "test", "x_SourceTable": "test",
        "x_CostBasis": "billed", "x_ChargeDate": day, "x_Model": model, "x_LoadedAt": start,
    }


def test_costs_sum_per_provider_and_model_for_the_org_and_days_asked(bq_client, monkeypatch):
    settings = make_settings(bq_client.project)
    org = new_org(bq_client, settings, "costs")
    today = datetime.now(UTC).date()
    old = today - timedelta(days=40)
    rows = [
        focus_row(org, today, "OpenAI", "OpenAI API", "gpt-4o", "1.25"),
        focus_row(org, today - timedelta(days=1), "OpenAI", "OpenAI API", "gpt-4o", "0.75"),
        focus_row(org, today, "Anthropic", "Claude API", "claude-sonnet-4", "2.50"),
        focus_row(org, old, "OpenAI", "OpenAI API", "gpt-4o", "99.00"),  # before --since
        focus_row("someone_else", today, "OpenAI", "OpenAI API", "gpt-4o", "500.00"),  # another org's row
    ]
    Writer(bq_client, settings).write(settings.org_dataset(org), "focus_cost_daily", rows, schema_path=FOCUS_SCHEMA)
    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: settings)
    runner = CliRunner()

    result = runner.invoke(costs, [org, "--by", "provider,model", "--since", "30d", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["by"] == ["provider", "model", "currency"]
    assert [(r["provider"], r["model"], r["effective_cost"]) for r in report["rows"]] == [
        ("Anthropic", "claude-sonnet-4", 2.5), ("OpenAI", "gpt-4o", 2.0)]

    table = runner.invoke(costs, [org, "--by", "provider", "--since", (today - timedelta(days=60)).isoformat()])
    assert table.exit_code == 0, table.output
    assert "OpenAI" in table.output and "101.00" in table.output and "total 103.50 USD" in table.output
    assert "500" not in table.output

    for args, message in (([org, "--by", "provider,drop table"], "group by one or more of"),
                          (["Not An Org"], "org"), ([org, "--since", "soon"], "not a duration")):
        refused = runner.invoke(costs, args)
        assert refused.exit_code == 2 and message in refused.output, refused.output
    missing = runner.invoke(costs, [new_org(bq_client, settings, "nofocus")])
    assert missing.exit_code == 1 and "no FOCUS table yet" in missing.output
