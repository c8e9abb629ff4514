"""Anthropic pipelines end to end (loader, executor, BigQuery emulator, Anthropic stand-in): costs to the
cent with cache reads and 5-minute/1-hour cache writes at their own prices, long context, batch and web
search; pagination with 429 and 500; 401; re-runs; unpriced models; billed costs (cents) reconciled
with a seeded difference."""

from __future__ import annotations

from decimal import Decimal

import pytest

from convergence.devstack.providers.anthropic_server import ADMIN_KEY, AnthropicStandIn, generated_usage, message_usage
from convergence.devstack.providers.common import to_epoch
from convergence.pipeline import Executor, PipelineLoader, ProcessorRegistry, RunContext, RunStatus, StepStatus
from tests.support.llm import (
    CONFIGS,
    rows,
    run_pipeline,
    standin_stacks,
)

pytestmark = [pytest.mark.emulator]

D1, D2 = "2026-03-02", "2026-03-03"
SONNET, HAIKU, OPUS = "claude-sonnet-4-20250514", "claude-haiku-4-5-20251001", "claude-opus-4-1-20250805"


@pytest.fixture
def bq(bq_client):
    """The session's BigQuery emulator (tests/conftest.py local_stack); every test uses its own org."""
    return bq_client


@pytest.fixture
async def stack(bq):
    """start(stand-in) -> (services on it, a fresh org); everything closed at the end."""
    async with standin_stacks(bq, "ANTHROPIC", "anthropic_url", "ant", ADMIN_KEY) as start:
        yield start


def known_usage():
    return [
        message_usage(f"{D1}T01:00:00Z", SONNET, uncached=1_000_000, cache_read=2_000_000, cache_5m=300_000,
                      cache_1h=100_000, output=250_000, web_search=12),
        message_usage(f"{D1}T02:00:00Z", SONNET, uncached=500_000, cache_read=1_000_000, output=100_000,
                      context_window="200k-1M"),
        message_usage(f"{D1}T03:00:00Z", HAIKU, uncached=4_000_000, cache_5m=200_000, output=1_000_000,
                      service_tier="batch"),
        message_usage(f"{D1}T04:00:00Z", OPUS, uncached=123_457, output=9_876, workspace_id="wrkspc_alpha"),
        message_usage(f"{D2}T05:00:00Z", SONNET, uncached=10_000, output=1_000),
    ]


# Hand-computed, USD (configs/anthropic/seed/data/default_pricing.csv list prices per 1M tokens).
EXPECTED = {
    # 1M x 3.00 + 2M x 0.30 (read) + 300k x 3.75 (5m write) + 100k x 6.00 (1h write) + 250k x 15 + 12 x $0.01
    (D1, SONNET, "0-200k", "standard"): Decimal("3.00") + Decimal("0.60") + Decimal("1.125") + Decimal("0.60")
    + Decimal("3.75") + Decimal("0.12"),
    # long context: 500k x 6.00 + 1M x 0.60 + 100k x 22.50
    (D1, SONNET, "200k-1M", "standard"): Decimal("3.00") + Decimal("0.60") + Decimal("2.25"),
    # batch, half price: (4M x 1.00 + 200k x 1.25 + 1M x 5.00) / 2
    (D1, HAIKU, "0-200k", "batch"): (Decimal("4.00") + Decimal("0.25") + Decimal("5.00")) / 2,
    # 123,457 x 15.00 + 9,876 x 75.00
    (D1, OPUS, "0-200k", "standard"): Decimal("1.851855") + Decimal("0.7407"),
    (D2, SONNET, "0-200k", "standard"): Decimal("0.03") + Decimal("0.015"),
}


def costs(bq, services, org):
    return {(r["cost_date"].isoformat(), r["model"], r["context_window"], r["service_tier"]): r
            for r in rows(bq, services.settings, org, "anthropic_cost_daily")}


async def test_usage_cost_exact_to_the_cent_and_rerun_leaves_one_copy(stack, bq):
    server = AnthropicStandIn(usage=known_usage() + [
        message_usage(f"{D1}T06:00:00Z", "claude-mystery-20260101", uncached=1_000, output=10)])
    services, org = await stack(server)
    params = {"start_date": D1, "end_date": D2}
    result, observer, _ = await run_pipeline("anthropic//usage_cost", org, services, params)
    assert result.status is RunStatus.SUCCESS, result.error
    assert result.step("extract_usage").rows_processed == 6
    calc = costs(bq, services, org)
    for key, expected in EXPECTED.items():
        assert calc[key]["total_cost"] == expected, key
    sonnet = calc[(D1, SONNET, "0-200k", "standard")]
    assert (sonnet["cache_write_5m_cost"], sonnet["cache_write_1h_cost"], sonnet["cache_read_cost"]) == \
        (Decimal("1.125"), Decimal("0.6"), Decimal("0.6"))
    assert sonnet["web_search_cost"] == Decimal("0.12") and sonnet["workspace_id"] is None
    assert calc[(D1, OPUS, "0-200k", "standard")]["workspace_id"] == "wrkspc_alpha"
    step = result.step("transform_cost").result
    assert sum(EXPECTED.values()) == Decimal("22.307555")
    assert step["total_cost_usd"] == "22.31"
    assert (step["unpriced_rows"], step["unpriced_tokens"], step["unpriced_models"]) == \
        (1, 1_010, "claude-mystery-20260101")
    event = next(s for s in observer.steps if s.step_id == "transform_cost")
    assert event.result["unpriced_models"] == "claude-mystery-20260101"

    request = server.calls("/v1/organizations/usage_report/messages")[0]
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.params("group_by[]") == ["workspace_id", "model", "service_tier", "context_window"]
    assert request.params("starting_at") == [f"{D1}T00:00:00Z"]
    assert request.params("ending_at") == ["2026-03-04T00:00:00Z"]

    again, _, _ = await run_pipeline("anthropic//usage_cost", org, services, params)
    assert again.status is RunStatus.SUCCESS
    assert len(rows(bq, services.settings, org, "anthropic_usage_daily_raw")) == 6
    assert len(rows(bq, services.settings, org, "anthropic_cost_daily")) == 6


async def test_billed_costs_in_cents_reconcile_with_a_seeded_difference(stack, bq):
    server = AnthropicStandIn(usage=known_usage(), cost_adjustments={(D1, HAIKU, "output_tokens"): "-0.40"})
    services, org = await stack(server)
    params = {"start_date": D1, "end_date": D2}
    assert (await run_pipeline("anthropic//usage_cost", org, services, params))[0].status is RunStatus.SUCCESS
    result, observer, _ = await run_pipeline("anthropic//cost_extract", org, services, params)
    assert result.status is RunStatus.SUCCESS, result.error
    billed = rows(bq, services.settings, org, "anthropic_billed_cost_daily_raw")
    assert sum(r["amount_usd"] for r in billed) == sum(EXPECTED.values()) - Decimal("0.40")
    searches = [r for r in billed if r["cost_type"] == "web_search"]
    assert [(r["amount_cents"], r["amount_usd"], r["model"]) for r in searches] == [("12", Decimal("0.12"), None)]
    reconcile = result.step("reconcile").result
    assert reconcile["differences"] == 1 and reconcile["difference_total_usd"] == "-0.40"
    line = reconcile["difference_lines"][0]
    assert (line["model"], line["token_type"], line["calculated_usd"], line["billed_usd"]) == \
        (HAIKU, "output_tokens", "2.50", "2.10")
    event = next(s for s in observer.steps if s.step_id == "reconcile")
    assert event.result["differences"] == 1 and "(-0.40)" in event.result["difference_summary"]


async def test_pagination_with_429_and_500_retried(stack, bq):
    source = generated_usage(seed=3, models=2, workspaces=[None])
    server = AnthropicStandIn(usage=source)
    path = "/v1/organizations/usage_report/messages"
    server.inject(429, path=path, skip=1, retry_after=1)
    server.inject(500, path=path, skip=2)
    services, org = await stack(server)
    config_overrides = {"page_limit": 3, "retry": {"attempts": 4, "initial_seconds": 0.05, "max_seconds": 0.2}}
    result = await _run_with(services, org, "2026-01-01", "2026-01-09", config_overrides)
    assert result.status is RunStatus.SUCCESS, result.error
    step = result.step("extract_usage")
    assert step.result["pages"] == 3 and step.result["retried_calls"] == 2
    assert [c.status for c in server.calls(path)] == [200, 429, 200, 500, 200]
    records = list(source.records(to_epoch("2026-01-01"), to_epoch("2026-01-10")))
    raw = rows(bq, services.settings, org, "anthropic_usage_daily_raw")
    assert sum(r["cache_creation_1h_input_tokens"] for r in raw) == sum(r.metrics["cache_1h"] for r in records)
    assert sum(r["output_tokens"] for r in raw) == sum(r.metrics["output"] for r in records)


async def _run_with(services, org, start, end, overrides):
    config = PipelineLoader(CONFIGS).load("anthropic//usage_cost")
    steps = [s.model_copy(update={"config": {**s.config, **overrides}}) if s.step_id == "extract_usage" else s
             for s in config.steps]
    config = config.model_copy(update={"steps": steps})
    context = RunContext(org_slug=org, run_id="run_anthropic", pipeline_id=config.pipeline_id,
                         parameters={"start_date": start, "end_date": end}, services=services)
    return await Executor(ProcessorRegistry()).run(config, context)


async def test_401_is_permanent_and_the_key_stays_secret(stack, bq, capsys):
    wrong = "sk-ant-admin01-wrong-9d2c71aa00"
    services, org = await stack(AnthropicStandIn(usage=known_usage()), key=wrong)
    result, observer, _ = await run_pipeline("anthropic//usage_cost", org, services,
                                                   {"start_date": D1, "end_date": D1})
    step = result.step("extract_usage")
    assert step.status is StepStatus.FAILED and step.error.code == "PROVIDER_AUTH_FAILED"
    assert "HTTP 401" in step.error.message and "authentication_error" in step.error.message
    assert not result.retryable
    out = capsys.readouterr()
    assert wrong not in observer.dump() + out.out + out.err
