"""OpenAI pipelines end to end: the real loader and executor, the BigQuery emulator, the OpenAI stand-in.

Costs are checked against hand-computed expectations (tokens x list price, per token type), exactly
and to the cent; pagination, 429/500 retries, 401, a malformed page, re-runs, unpriced models, billed
costs and their reconciliation with a seeded difference, and the monthly subscriptions.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from convergence.devstack.providers.common import FixedUsage, to_epoch
from convergence.devstack.providers.openai_server import (
    ADMIN_KEY,
    OpenAIStandIn,
    completion,
    embedding,
    generated_completions,
)
from convergence.pipeline import Executor, PipelineLoader, ProcessorRegistry, RunContext, RunStatus, StepStatus
from tests.support.llm import (
    CONFIGS,
    RecordingObserver,
    rows,
    run_pipeline,
    standin_stacks,
)

pytestmark = [pytest.mark.emulator]

D1, D2 = "2026-03-02", "2026-03-03"
PROJECT = "proj_standin_alpha"


@pytest.fixture
def bq(bq_client):
    """The session's BigQuery emulator (tests/conftest.py local_stack); every test uses its own org."""
    return bq_client


@pytest.fixture
async def stack(bq):
    """start(stand-in) -> (services on it, a fresh org); everything closed at the end."""
    async with standin_stacks(bq, "OPENAI", "openai_url", "oai", ADMIN_KEY) as start:
        yield start


def known_usage():
    """A small, hand-checkable usage set (2026 field set: uncached, cached and cache-write reported)."""
    return [
        completion(f"{D1}T01:00:00Z", "gpt-4o-2024-08-06", uncached=1_234_567, cached=345_678, output=98_765,
                   requests=10),
        completion(f"{D1}T02:00:00Z", "gpt-4o-mini-2024-07-18", uncached=10_000_000, cached=2_000_000,
                   output=3_000_000, batch=True, requests=3),
        completion(f"{D1}T03:00:00Z", "gpt-5-mini-2025-08-07", uncached=500_000, cached=100_000, cache_write=50_000,
                   output=200_000),
        completion(f"{D1}T04:00:00Z", "o3-2025-04-16", uncached=1_000_000, output=500_000),
        completion(f"{D2}T05:00:00Z", "gpt-4o-2024-08-06", uncached=400_000, output=20_000),
        completion(f"{D2}T09:00:00Z", "gpt-4o-2024-08-06", uncached=600_000, cached=1_000, output=30_000),
    ]


# Hand-computed, USD: tokens x price per 1M (configs/openai/seed/data/default_pricing.csv list prices).
EXPECTED = {
    (D1, "gpt-4o-2024-08-06"): Decimal("3.0864175") + Decimal("0.4320975") + Decimal("0.98765"),  # 2.50/1.25/10
    (D1, "gpt-4o-mini-2024-07-18"): (Decimal("1.50") + Decimal("0.15") + Decimal("1.80")) / 2,  # batch: half
    (D1, "gpt-5-mini-2025-08-07"): Decimal("0.125") + Decimal("0.0025") + Decimal("0.0125") + Decimal("0.4"),
    (D1, "o3-2025-04-16"): Decimal("2") + Decimal("4"),  # price after the 2025-06-10 cut: 2.00 / 8.00
    (D1, "text-embedding-3-small"): Decimal("0.04"),
    (D2, "gpt-4o-2024-08-06"): Decimal("2.5") + Decimal("0.00125") + Decimal("0.5"),
}


def cost_by_day_model(bq, settings, org):
    return {(r["cost_date"].isoformat(), r["model"]): r for r in rows(bq, settings, org, "openai_cost_daily")}


async def test_usage_cost_exact_to_the_cent_and_rerun_leaves_one_copy(stack, bq):
    usage = known_usage() + [completion(f"{D1}T06:00:00Z", "gpt-9-preview", uncached=123_456, output=654)]
    server = OpenAIStandIn(completions=usage, embeddings=[embedding(f"{D1}T07:00:00Z", "text-embedding-3-small",
                                                                    tokens=2_000_000)])
    services, org = await stack(server)
    params = {"start_date": D1, "end_date": D2}

    result, observer, _ = await run_pipeline("openai/cost/usage_cost", org, services, params)
    assert result.status is RunStatus.SUCCESS, result.error
    extract = result.step("extract_usage")
    assert extract.rows_processed == 7  # D1: 5 completions groups + 1 embeddings; D2: 1 (two hours, one group)
    cost_step = result.step("transform_cost")
    assert cost_step.result["unpriced_rows"] == 1
    assert cost_step.result["unpriced_tokens"] == 123_456 + 654
    assert cost_step.result["unpriced_models"] == "gpt-9-preview"

    costs = cost_by_day_model(bq, services.settings, org)
    for key, expected in EXPECTED.items():
        assert costs[key]["is_priced"] is True
        assert costs[key]["total_cost"] == expected, key  # exact (NUMERIC)
    unpriced = costs[(D1, "gpt-9-preview")]
    assert unpriced["is_priced"] is False and unpriced["total_cost"] is None and unpriced["input_cost"] is None
    total = sum(EXPECTED.values())
    assert total == Decimal("15.812415")  # D1 12.811165 + D2 3.00125
    assert cost_step.result["total_cost_usd"] == "15.81"
    assert costs[(D1, "o3-2025-04-16")]["pricing_effective_date"].isoformat() == "2025-06-10"
    mini = costs[(D1, "gpt-4o-mini-2024-07-18")]
    assert mini["batch"] is True and mini["price_multiplier"] == Decimal("0.5")
    # The unpriced usage reaches the events: the step result's scalar fields.
    event = next(s for s in observer.steps if s.step_id == "transform_cost")
    assert event.result["unpriced_models"] == "gpt-9-preview" and event.result["unpriced_rows"] == 1

    raw_before = len(rows(bq, services.settings, org, "openai_usage_daily_raw"))
    again, _, _ = await run_pipeline("openai/cost/usage_cost", org, services, params)
    assert again.status is RunStatus.SUCCESS
    assert len(rows(bq, services.settings, org, "openai_usage_daily_raw")) == raw_before == 7
    assert len(rows(bq, services.settings, org, "openai_cost_daily")) == len(costs) == 7
    assert cost_by_day_model(bq, services.settings, org)[(D1, "gpt-4o-2024-08-06")]["total_cost"] == \
        EXPECTED[(D1, "gpt-4o-2024-08-06")]
    # The pricing seed ran once: the second run kept the table as it was.
    assert again.step("ensure_pricing").result["kept_tables"] == "openai_model_pricing"


async def test_price_change_applies_from_its_date_only(stack, bq):
    usage = [completion("2025-06-09T10:00:00Z", "o3-2025-04-16", uncached=1_000_000, cached=1_000_000,
                        output=1_000_000),
             completion("2025-06-10T10:00:00Z", "o3-2025-04-16", uncached=1_000_000, cached=1_000_000,
                        output=1_000_000)]
    services, org = await stack(OpenAIStandIn(completions=usage))
    result, _, _ = await run_pipeline("openai/cost/usage_cost", org, services,
                                      {"start_date": "2025-06-09", "end_date": "2025-06-10"})
    assert result.status is RunStatus.SUCCESS, result.error
    costs = cost_by_day_model(bq, services.settings, org)
    assert costs[("2025-06-09", "o3-2025-04-16")]["total_cost"] == Decimal("52.50")  # 10 + 2.50 + 40
    assert costs[("2025-06-10", "o3-2025-04-16")]["total_cost"] == Decimal("10.50")  # 2 + 0.50 + 8


async def test_legacy_field_set_gives_the_same_costs(stack, bq):
    """Before July 2026 input_tokens included the cached tokens and there was no uncached field."""
    server = OpenAIStandIn(completions=known_usage()[:1], field_set="2025")
    services, org = await stack(server)
    result, _, _ = await run_pipeline("openai/cost/usage_cost", org, services, {"start_date": D1, "end_date": D1})
    assert result.status is RunStatus.SUCCESS, result.error
    raw = rows(bq, services.settings, org, "openai_usage_daily_raw")
    assert raw[0]["input_tokens"] == 1_234_567 + 345_678 and raw[0]["input_uncached_tokens"] == 1_234_567
    assert cost_by_day_model(bq, services.settings, org)[(D1, "gpt-4o-2024-08-06")]["total_cost"] == \
        EXPECTED[(D1, "gpt-4o-2024-08-06")]


async def test_pagination_with_429_and_500_retried(stack, bq):
    source = generated_completions(seed=11, models=3, projects=["proj_a"], with_batch=False)
    server = OpenAIStandIn(completions=source)
    path = "/v1/organization/usage/completions"
    server.inject(429, path=path, skip=1, retry_after=1)   # second request: rate limited (Retry-After: 1)
    server.inject(500, path=path, skip=1)                  # third request: a server error
    services, org = await stack(server)
    start, end = "2026-02-01", "2026-02-10"
    config_overrides = {"endpoints": ["completions"], "page_limit": 2,
                        "retry": {"attempts": 4, "initial_seconds": 0.05, "max_seconds": 0.2}}
    result, _ = await _run_extract_only(services, org, start, end, config_overrides)
    assert result.status is RunStatus.SUCCESS, result.error
    step = result.step("extract_usage")
    assert step.result["pages"] == 5 and step.result["api_calls"] == 7 and step.result["retried_calls"] == 2
    calls = server.calls(path)
    assert [c.status for c in calls] == [200, 429, 500, 200, 200, 200, 200]
    assert all(c.params("group_by") == ["project_id", "model", "batch", "service_tier"] for c in calls)
    assert {c.params("page")[0] if c.params("page") else None for c in calls[3:]} != {None}
    # Every generated (hour, model) record is in the raw table, summed per day: compare token totals.
    records = list(source.records(to_epoch(start), to_epoch("2026-02-11")))
    raw = rows(bq, services.settings, org, "openai_usage_daily_raw")
    assert sum(r["output_tokens"] for r in raw) == sum(r.metrics["output"] for r in records)
    assert len(raw) == len({(r.hour // 86400, r.dims["model"]) for r in records}) == step.rows_processed
    assert len({r["usage_date"] for r in raw}) == 10


async def _run_extract_only(services, org, start, end, overrides):
    """usage_cost with the extract step's config changed (the YAML is loaded and copied, not edited)."""
    config = PipelineLoader(CONFIGS).load("openai/cost/usage_cost")
    steps = []
    for step in config.steps:
        if step.step_id == "extract_usage":
            step = step.model_copy(update={"config": {**step.config, **overrides}})
        steps.append(step)
    config = config.model_copy(update={"steps": steps})
    observer = RecordingObserver()
    context = RunContext(org_slug=org, run_id="run_extract_only", pipeline_id=config.pipeline_id,
                         parameters={"start_date": start, "end_date": end}, services=services)
    return await Executor(ProcessorRegistry(), observer=observer).run(config, context), observer


async def test_401_is_a_permanent_failure_without_the_key_anywhere(stack, bq, capsys, caplog):
    services, org = await stack(OpenAIStandIn(completions=known_usage()))
    params = {"start_date": D1, "end_date": D1}
    assert (await run_pipeline("openai/cost/usage_cost", org, services, params))[0].status is RunStatus.SUCCESS
    before = rows(bq, services.settings, org, "openai_usage_daily_raw")
    wrong = "sk-admin-wrong-5ec4e7-0000000000000000"
    services.credentials.secrets[(org, "OPENAI")] = wrong  # the key was rotated at OpenAI
    capsys.readouterr()
    result, observer, context = await run_pipeline("openai/cost/usage_cost", org, services, params)
    assert result.status is RunStatus.FAILED and not result.retryable
    step = result.step("extract_usage")
    assert step.status is StepStatus.FAILED and step.error.code == "PROVIDER_AUTH_FAILED"
    assert "HTTP 401" in step.error.message and "credentials rejected" in step.error.message
    assert result.step("transform_cost").status is StepStatus.SKIPPED
    assert context.secrets["openai"] == wrong  # it was used...
    out = capsys.readouterr()
    for text in (observer.dump(), result.model_dump_json(), out.out, out.err, caplog.text):
        assert wrong not in text  # ...but never leaves the process
    # The failed run changed nothing: the earlier run's rows are still there.
    assert rows(bq, services.settings, org, "openai_usage_daily_raw") == before and len(before) == 4


async def test_provider_outage_is_transient_and_changes_nothing(stack, bq):
    server = OpenAIStandIn(completions=generated_completions(seed=2, models=2, projects=["proj_a"], density=1.0))
    services, org = await stack(server)
    overrides = {"endpoints": ["completions"], "page_limit": 2,
                 "retry": {"attempts": 2, "initial_seconds": 0.01, "max_seconds": 0.02}}
    first, _ = await _run_extract_only(services, org, "2026-02-01", "2026-02-04", overrides)
    assert first.status is RunStatus.SUCCESS, first.error
    before = rows(bq, services.settings, org, "openai_usage_daily_raw")
    server.inject(503, path="/v1/organization/usage/completions", skip=1, times=2)  # page 2, both attempts
    result, _ = await _run_extract_only(services, org, "2026-02-01", "2026-02-04", overrides)
    step = result.step("extract_usage")
    assert step.error.code == "PROVIDER_UNAVAILABLE" and result.retryable  # Pub/Sub will redeliver
    assert rows(bq, services.settings, org, "openai_usage_daily_raw") == before and len(before) == 16


async def test_malformed_page_keeps_earlier_rows_and_says_so(stack, bq):
    source = generated_completions(seed=5, models=2, projects=["proj_a"], with_batch=False, density=1.0)
    server = OpenAIStandIn(completions=source)
    server.inject(path="/v1/organization/usage/completions", skip=1, malformed=True)
    services, org = await stack(server)
    result, _ = await _run_extract_only(services, org, "2026-02-01", "2026-02-04",
                                      {"endpoints": ["completions"], "page_limit": 2})
    step = result.step("extract_usage")
    assert step.status is StepStatus.FAILED and step.error.code == "PROVIDER_BAD_RESPONSE"
    assert "malformed completions page 2" in step.error.message
    assert "4 rows from 1 earlier pages were loaded" in step.error.message
    raw = rows(bq, services.settings, org, "openai_usage_daily_raw")
    assert len(raw) == 4 and {r["usage_date"].isoformat() for r in raw} == {"2026-02-01", "2026-02-02"}


async def test_billed_costs_reconcile_and_report_a_seeded_difference(stack, bq):
    server = OpenAIStandIn(completions=known_usage(),
                           embeddings=[embedding(f"{D1}T07:00:00Z", "text-embedding-3-small", tokens=2_000_000)],
                           cost_adjustments={(D1, "gpt-4o-2024-08-06, output"): "1.25"}, amount_as_string=True)
    services, org = await stack(server)
    params = {"start_date": D1, "end_date": D2}
    usage, _, _ = await run_pipeline("openai/cost/usage_cost", org, services, params)
    assert usage.status is RunStatus.SUCCESS, usage.error

    result, observer, _ = await run_pipeline("openai/cost/cost_extract", org, services, params)
    assert result.status is RunStatus.SUCCESS, result.error
    billed = rows(bq, services.settings, org, "openai_billed_cost_daily_raw")
    assert {r["token_type"] for r in billed} == {"input", "cached input", "output"}
    assert sum(r["amount_usd"] for r in billed) == sum(EXPECTED.values()) + Decimal("1.25")
    reconcile = result.step("reconcile").result
    assert reconcile["differences"] == 1
    assert reconcile["difference_total_usd"] == "1.25"
    line = reconcile["difference_lines"][0]
    assert (line["cost_date"], line["model"], line["token_type"], line["difference_usd"], line["status"]) == \
        (D1, "gpt-4o-2024-08-06", "output", "1.25", "DIFFERENCE")
    assert line["calculated_usd"] == "0.99" and line["billed_usd"] == "2.24"
    event = next(s for s in observer.steps if s.step_id == "reconcile")
    assert event.result["differences"] == 1 and "gpt-4o-2024-08-06 output" in event.result["difference_summary"]

    # cost_calculation recomputes from the raw usage and reconciles again: same answer, one copy of each row.
    again, _, _ = await run_pipeline("openai/cost/cost_calculation", org, services, params)
    assert again.status is RunStatus.SUCCESS, again.error
    assert again.step("reconcile").result["differences"] == 1
    recon = rows(bq, services.settings, org, "openai_cost_reconciliation_daily")
    assert len(recon) == len({(r["cost_date"], r["model"], r["token_type"]) for r in recon})


async def test_subscriptions_monthly(stack, bq):
    services, org = await stack(OpenAIStandIn(completions=[]))
    result, _, _ = await run_pipeline("openai//subscriptions", org, services, {"month": "2026-03"})
    assert result.status is RunStatus.SUCCESS, result.error
    assert result.step("subscriptions_monthly").result["plans"] == 5
    dataset = f"{bq.project}.{services.settings.org_dataset(org)}"
    bq.query(f"UPDATE `{dataset}.openai_subscriptions` SET quantity = 3, unit_price_usd = 25 "
             "WHERE plan_name = 'TIER2'").result()
    again, _, _ = await run_pipeline("openai//subscriptions", org, services, {"month": "2026-03"})
    step = again.step("subscriptions_monthly")
    assert step.result["monthly_cost_usd"] == "75.00" and step.result["units"] == 3
    monthly = rows(bq, services.settings, org, "openai_subscriptions_monthly")
    assert len(monthly) == 5  # re-run replaced the month, one copy


async def test_invalid_dates_fail_clearly_before_any_call(stack, bq):
    server = OpenAIStandIn(completions=[])
    services, org = await stack(server)
    for params, fragment in (({"start_date": D2, "end_date": D1}, "is after end_date"),
                             ({"start_date": "2026-3-1"}, "not an ISO date"),
                             ({"start_date": "2025-01-01", "end_date": "2026-01-01"}, "at most 93")):
        result, _, _ = await run_pipeline("openai/cost/usage_cost", org, services, params)
        step = result.step("extract_usage")
        assert step.error.code == "INVALID_PARAMETERS" and fragment in step.error.message, step.error
        assert not result.retryable
    assert server.calls("/v1/organization/usage/completions") == []


def test_fixed_usage_is_the_stand_in_data():
    assert len(list(FixedUsage(known_usage()).records(to_epoch(D1), to_epoch("2026-03-04")))) == 6
