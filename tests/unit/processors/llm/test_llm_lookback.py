"""The trailing window of the LLM pipelines: every scheduled run re-pulls `lookback_days` days (3 by
default) and replaces them, so a day the provider restated is replaced on the next run, never doubled.

Pure date tests, the schedules of the YAML configs, then end to end on the BigQuery emulator with the
OpenAI and Anthropic stand-ins."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from convergence.devstack.providers.anthropic_server import AnthropicStandIn, message_usage
from convergence.devstack.providers.common import FixedUsage
from convergence.devstack.providers.openai_server import OpenAIStandIn, completion
from convergence.pipeline import PipelineLoader, RunStatus
from convergence.pipeline.errors import PermanentStepError
from convergence.processors._llm.params import date_range
from convergence.publisher.schedule import schedule_parameters
from tests.support.llm import CONFIGS, DictCredentials, LlmTestServices, make_settings, new_org, rows, run_pipeline

TODAY = date(2026, 3, 10)
D1, D2, D3, D4 = "2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"
LLM_PIPELINES = ("openai/cost/usage_cost", "openai/cost/cost_extract", "openai/cost/cost_calculation",
                 "anthropic//usage_cost", "anthropic//cost_extract", "anthropic//cost_calculation")
GPT, SONNET = "gpt-4o-2024-08-06", "claude-sonnet-4-20250514"


def span(config=None, **params):
    dates = date_range(config or {}, params, today=TODAY)
    return dates.start.isoformat(), dates.end.isoformat()


def test_lookback_widens_to_the_days_ending_end_date():
    assert span(start_date=D4, end_date=D4, lookback_days="3") == (D2, D4)
    assert span(start_date=D1, end_date=D4, lookback_days=3) == (D1, D4)  # already wider: unchanged
    assert span({"lookback_days": 2}, start_date=D4, end_date=D4, lookback_days=5) == (D3, D4)  # config wins
    assert span(start_date=D4, end_date=D4) == (D4, D4)  # manual and backfill runs: exactly their days
    assert span(lookback_days="3") == ("2026-03-07", "2026-03-09")  # no dates: the days ending yesterday


@pytest.mark.parametrize("value,message", [("three", "not a whole number"), ("0", "between 1 and 366"),
                                           ("400", "between 1 and 366")])
def test_bad_lookback_is_a_clear_parameter_error(value, message):
    with pytest.raises(PermanentStepError, match=message) as caught:
        span(start_date=D4, end_date=D4, lookback_days=value)
    assert caught.value.code == "INVALID_PARAMETERS"


def test_widened_range_obeys_max_range_days():
    with pytest.raises(PermanentStepError, match="at most 93"):
        span({"max_range_days": 93}, start_date=D4, end_date=D4, lookback_days=100)


@pytest.mark.parametrize("pipeline", LLM_PIPELINES)
def test_scheduled_run_of_day_d_covers_d_minus_2_to_d(pipeline):
    schedule = PipelineLoader(CONFIGS).load(pipeline).schedule
    assert schedule is not None
    parameters = schedule_parameters(schedule, datetime(2026, 3, 6, 23, 0, tzinfo=UTC))
    assert parameters["lookback_days"] == "3"
    assert span(**parameters) == (D2, D4)  # the slot's yesterday is D4


# -- end to end ---------------------------------------------------------------------------------------------
@pytest.fixture
async def services_for(bq_client):
    opened = []

    async def start(server, provider: str):
        await server.start()
        url = {"openai_url": server.base_url} if provider == "OPENAI" else {"anthropic_url": server.base_url}
        settings = make_settings(bq_client.project, **url)
        org = new_org(bq_client, settings, "lb")
        services = LlmTestServices(settings, bq_client, DictCredentials({(org, provider): server_key(server)}))
        opened.append((server, services))
        return services, org

    yield start
    for server, services in opened:
        await services.aclose()
        await server.stop()


def server_key(server) -> str:
    return sorted(server.admin_keys)[0]


def scheduled(day: str) -> dict[str, str]:
    return {"start_date": day, "end_date": day, "lookback_days": "3"}


def by_day(table_rows, column: str, value: str) -> dict[str, list]:
    days: dict[str, list] = {}
    for row in table_rows:
        days.setdefault(row[column].isoformat(), []).append(row[value])
    return days


@pytest.mark.emulator
async def test_openai_restated_day_is_replaced_on_the_next_run(services_for, bq_client):
    first = [completion(f"{day}T01:00:00Z", GPT, uncached=1_000_000, output=1_000) for day in (D1, D2, D3)]
    server = OpenAIStandIn(completions=first, embeddings=[])
    services, org = await services_for(server, "OPENAI")

    result, _, _ = await run_pipeline("openai/cost/usage_cost", org, services, scheduled(D3))
    assert result.status is RunStatus.SUCCESS, result.error
    assert result.step("extract_usage").result["start_date"] == D1
    assert result.step("transform_cost").result["start_date"] == D1

    # The provider restates D2 (more usage published late) and D4 arrives: the D4 run covers D2..D4.
    server.completions = FixedUsage([*first[:1], completion(f"{D2}T01:00:00Z", GPT, uncached=3_000_000,
                                                            output=1_000), first[2],
                                     completion(f"{D4}T01:00:00Z", GPT, uncached=2_000_000, output=1_000)])
    again, _, _ = await run_pipeline("openai/cost/usage_cost", org, services, scheduled(D4))
    assert again.status is RunStatus.SUCCESS, again.error
    assert (again.step("extract_usage").result["start_date"], again.step("extract_usage").result["end_date"]) \
        == (D2, D4)

    usage = by_day(rows(bq_client, services.settings, org, "openai_usage_daily_raw"), "usage_date",
                   "input_uncached_tokens")
    assert usage == {D1: [1_000_000], D2: [3_000_000], D3: [1_000_000], D4: [2_000_000]}
    cost = by_day(rows(bq_client, services.settings, org, "openai_cost_daily"), "cost_date", "total_cost")
    # gpt-4o list price 2.50 input / 10.00 output per 1M tokens: one row per day, D2 at its restated cost
    assert cost == {D1: [Decimal("2.51")], D2: [Decimal("7.51")], D3: [Decimal("2.51")], D4: [Decimal("5.01")]}


@pytest.mark.emulator
async def test_anthropic_restated_billed_cost_is_replaced_on_the_next_run(services_for, bq_client):
    usage = [message_usage(f"{day}T01:00:00Z", SONNET, uncached=1_000_000) for day in (D1, D2, D3, D4)]
    server = AnthropicStandIn(usage=usage)
    services, org = await services_for(server, "ANTHROPIC")

    result, _, _ = await run_pipeline("anthropic//cost_extract", org, services, scheduled(D3))
    assert result.status is RunStatus.SUCCESS, result.error
    billed = by_day(rows(bq_client, services.settings, org, "anthropic_billed_cost_daily_raw"), "cost_date",
                    "amount_usd")
    assert billed == {D1: [Decimal("3")], D2: [Decimal("3")], D3: [Decimal("3")]}

    server.cost_adjustments[(D2, SONNET, "uncached_input_tokens")] = Decimal("0.25")  # a credit restated late
    again, _, _ = await run_pipeline("anthropic//cost_extract", org, services, scheduled(D4))
    assert again.status is RunStatus.SUCCESS, again.error
    billed = by_day(rows(bq_client, services.settings, org, "anthropic_billed_cost_daily_raw"), "cost_date",
                    "amount_usd")
    assert billed == {D1: [Decimal("3")], D2: [Decimal("3.25")], D3: [Decimal("3")], D4: [Decimal("3")]}
