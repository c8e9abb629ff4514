"""DeepSeek pipelines end to end (loader, executor, BigQuery emulator, DeepSeek stand-in): balance
snapshots and the spend derived from them net of recorded credits, to the cent; same-day re-runs leave one
snapshot; cost from org-supplied token counts at cache hit / miss / output prices across DeepSeek's price
changes; unpriced models; a bad key is PROVIDER_AUTH_FAILED with the key kept secret."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import aiohttp
import pytest

from convergence.devstack.providers.deepseek_server import API_KEY, DeepSeekStandIn
from convergence.pipeline import RunStatus, StepStatus
from convergence.processors.deepseek import balance as balance_step
from tests.support.llm import (
    rows,
    run_pipeline,
    standin_stacks,
)

pytestmark = [pytest.mark.emulator]

USAGE_SCHEMA = "configs/deepseek/schemas/deepseek_usage_daily_raw.json"
CREDITS_SCHEMA = "configs/deepseek/schemas/deepseek_balance_credits.json"


@pytest.fixture
def bq(bq_client):
    """The session's BigQuery emulator (tests/conftest.py local_stack); every test uses its own org."""
    return bq_client


@pytest.fixture
async def stack(bq):
    """start(stand-in) -> (services on it, a fresh org); everything closed at the end."""
    async with standin_stacks(bq, "DEEPSEEK", "deepseek_base_url", "dsk", API_KEY) as start:
        yield start


@pytest.fixture
def clock(monkeypatch):
    """Moves the snapshot step's clock to 00:10 UTC of a given day."""
    def at(day: str) -> None:
        moment = datetime.fromisoformat(f"{day}T00:10:00+00:00")
        monkeypatch.setattr(balance_step, "now", lambda: moment)
    return at


def load(services, org, table, rows_, schema, date_column, start, end):
    """Rows the org loads itself (its usage sums, its credits), replacing its rows for the range."""
    services.writer.write(services.org_dataset(org), table, rows_, mode="range_replace", org_slug=org,
                          date_column=date_column, date_range=(date.fromisoformat(start), date.fromisoformat(end)),
                          schema_path=schema)


def spend_by_day(bq, services, org):
    return {r["spend_date"].isoformat(): r for r in rows(bq, services.settings, org, "deepseek_balance_spend_daily")}


async def test_balance_snapshots_derive_daily_spend_net_of_recorded_credits(stack, bq, clock):
    server = DeepSeekStandIn(granted="10.00", topped_up="50.00")
    services, org = await stack(server)
    clock("2026-03-02")
    first, _, _ = await run_pipeline("deepseek//balance_snapshot", org, services,
                                     {"start_date": "2026-03-01", "end_date": "2026-03-01"})
    assert first.status is RunStatus.SUCCESS, first.error
    assert first.step("snapshot_balance").result["balances"] == [{"currency": "USD", "total": "60.00"}]
    server.spend("3.25")  # from the granted balance first: 6.75 granted, 50.00 topped up
    clock("2026-03-03")
    assert (await run_pipeline("deepseek//balance_snapshot", org, services,
                               {"start_date": "2026-03-02", "end_date": "2026-03-02"}))[0].status is RunStatus.SUCCESS
    server.top_up("20.00")
    server.spend("12.40")  # 6.75 from granted, 5.65 from topped up: 0.00 + 64.35
    clock("2026-03-04")
    params = {"start_date": "2026-03-03", "end_date": "2026-03-03", "lookback_days": "3"}
    result, _, _ = await run_pipeline("deepseek//balance_snapshot", org, services, params)
    assert result.status is RunStatus.SUCCESS, result.error
    derive = result.step("derive_spend").result
    assert (derive["start_date"], derive["end_date"]) == ("2026-03-01", "2026-03-03")
    days = spend_by_day(bq, services, org)
    assert sorted(days) == ["2026-03-02", "2026-03-03"]  # no snapshot of 03-01: nothing to open that day
    assert (days["2026-03-02"]["status"], days["2026-03-02"]["spend"]) == ("DERIVED", Decimal("3.25"))
    # The topped-up balance rose (50.00 -> 64.35) with no credit recorded: the spend is unknown, not guessed.
    assert (days["2026-03-03"]["status"], days["2026-03-03"]["spend"]) == ("CREDIT_UNRECORDED", None)
    assert derive["credit_unrecorded_days"] == 1 and derive["spend"] == [{"currency": "USD", "amount": "3.25"}]

    load(services, org, "deepseek_balance_credits",
         [{"org_slug": org, "credit_date": "2026-03-03", "currency": "USD", "amount": "20.00", "kind": "top_up"}],
         CREDITS_SCHEMA, "credit_date", "2026-03-03", "2026-03-03")
    again, _, _ = await run_pipeline("deepseek//balance_snapshot", org, services,
                                     {"start_date": "2026-03-02", "end_date": "2026-03-04"})
    assert again.status is RunStatus.SUCCESS, again.error
    days = spend_by_day(bq, services, org)
    assert {d: (r["status"], r["spend"]) for d, r in days.items()} == {
        "2026-03-02": ("DERIVED", Decimal("3.25")),
        # 60.00 - 3.25 = 56.75 opening + 20.00 credited - 64.35 closing
        "2026-03-03": ("DERIVED", Decimal("12.40")),
        "2026-03-04": ("NO_CLOSING_SNAPSHOT", None),
    }
    closing = days["2026-03-03"]
    assert (closing["closing_granted_balance"], closing["closing_topped_up_balance"]) == (Decimal(0), Decimal("64.35"))
    assert again.step("derive_spend").result["spend"] == [{"currency": "USD", "amount": "15.65"}]
    # Four runs on three days: one snapshot a day, the same-day re-run replaced its own.
    snapshots = rows(bq, services.settings, org, "deepseek_balance_snapshots", order="snapshot_date")
    assert [(r["snapshot_date"].isoformat(), r["total_balance"]) for r in snapshots] == [
        ("2026-03-02", Decimal("60")), ("2026-03-03", Decimal("56.75")), ("2026-03-04", Decimal("64.35"))]
    assert all(r["is_available"] for r in snapshots)
    request = server.calls("/user/balance")[0]
    assert request.headers["accept"] == "application/json" and request.status == 200


async def test_bad_key_is_provider_auth_failed_and_stays_secret(stack, bq, clock, capsys):
    wrong = "sk-wrong-deepseek-5f1c0e9a77"
    server = DeepSeekStandIn(topped_up="5.00")
    services, org = await stack(server, key=wrong)
    clock("2026-03-02")
    result, observer, _ = await run_pipeline("deepseek//balance_snapshot", org, services,
                                             {"start_date": "2026-03-01", "end_date": "2026-03-01"})
    step = result.step("snapshot_balance")
    assert result.status is RunStatus.FAILED and step.status is StepStatus.FAILED
    assert step.error.code == "PROVIDER_AUTH_FAILED"
    assert "HTTP 401" in step.error.message and "Authentication Fails" in step.error.message
    assert not result.retryable
    assert result.step("derive_spend").status is not StepStatus.SUCCESS
    assert [c.status for c in server.calls("/user/balance")] == [401]
    out = capsys.readouterr()
    assert wrong not in observer.dump() + out.out + out.err


async def test_malformed_balance_is_a_bad_response_and_writes_nothing(stack, bq, clock):
    server = DeepSeekStandIn(topped_up="5.00")
    server.inject(path="/user/balance", malformed=True)
    services, org = await stack(server)
    clock("2026-03-02")
    result, _, _ = await run_pipeline("deepseek//balance_snapshot", org, services,
                                      {"start_date": "2026-03-01", "end_date": "2026-03-01"})
    step = result.step("snapshot_balance")
    assert step.error.code == "PROVIDER_BAD_RESPONSE" and "is_available" in step.error.message
    dataset = f"{bq.project}.{services.org_dataset(org)}"
    assert "deepseek_balance_snapshots" not in [t.table_id for t in bq.list_tables(dataset)]


def usage(org, day, model, hit, miss, out, band=None, key=None, reasoning=None, requests=None):
    return {"org_slug": org, "usage_date": day, "api_key_name": key, "model": model, "time_band": band,
            "requests": requests, "prompt_cache_hit_tokens": hit, "prompt_cache_miss_tokens": miss,
            "completion_tokens": out, "reasoning_tokens": reasoning, "source": "test"}


def costs(bq, services, org):
    return {(r["cost_date"].isoformat(), r["model"], r["time_band"], r["api_key_name"]): r
            for r in rows(bq, services.settings, org, "deepseek_cost_daily")}


async def test_cost_across_price_changes_off_peak_and_unpriced(stack, bq):
    services, org = await stack(DeepSeekStandIn())
    m = 1_000_000
    load(services, org, "deepseek_usage_daily_raw", [
        usage(org, "2025-09-04", "deepseek-reasoner", m, m, m, band="off_peak"),
        usage(org, "2025-09-04", "deepseek-reasoner", m, m, m),
        usage(org, "2025-09-05", "deepseek-chat", 0, m, 0, band="standard"),
        usage(org, "2025-09-06", "deepseek-chat", 0, m, 0),
        usage(org, "2025-09-06", "deepseek-chat", 0, m, 0, band="off_peak"),
        usage(org, "2025-09-06", "deepseek-mystery", 0, 1_000, 10),
    ], USAGE_SCHEMA, "usage_date", "2025-09-04", "2025-09-06")
    result, _, _ = await run_pipeline("deepseek//usage_cost", org, services,
                                      {"start_date": "2025-09-04", "end_date": "2025-09-06"})
    assert result.status is RunStatus.SUCCESS, result.error
    calc = costs(bq, services, org)
    expected = {
        # off-peak R1: 1M x 0.035 + 1M x 0.135 + 1M x 0.55; standard: 0.14 + 0.55 + 2.19
        ("2025-09-04", "deepseek-reasoner", "off_peak", None): Decimal("0.72"),
        ("2025-09-04", "deepseek-reasoner", "standard", None): Decimal("2.88"),
        # the day before the V3.1 price list (cache miss 0.27), then the new list (0.56), night or day
        ("2025-09-05", "deepseek-chat", "standard", None): Decimal("0.27"),
        ("2025-09-06", "deepseek-chat", "standard", None): Decimal("0.56"),
        ("2025-09-06", "deepseek-chat", "off_peak", None): Decimal("0.56"),
    }
    for key, cost in expected.items():
        assert calc[key]["total_cost"] == cost and calc[key]["is_priced"], key
    assert calc[("2025-09-06", "deepseek-chat", "standard", None)]["pricing_effective_date"] == date(2025, 9, 6)
    mystery = calc[("2025-09-06", "deepseek-mystery", "standard", None)]
    assert (mystery["is_priced"], mystery["total_cost"]) == (False, None)
    step = result.step("transform_cost").result
    assert step["total_cost_usd"] == "4.99"
    assert (step["unpriced_rows"], step["unpriced_tokens"], step["unpriced_models"]) == (1, 1_010, "deepseek-mystery")


async def test_cost_at_current_prices_exact_and_rerun_replaces(stack, bq):
    services, org = await stack(DeepSeekStandIn())
    day = "2026-03-02"
    load(services, org, "deepseek_usage_daily_raw", [
        usage(org, day, "deepseek-chat", 6_000_000, 1_500_000, 700_000, key="app-a", requests=40),
        usage(org, day, "deepseek-chat", 4_000_000, 500_000, 300_000, key="app-a", requests=10),
        usage(org, day, "deepseek-reasoner", 123_456, 654_321, 98_765, key="app-b", reasoning=50_000, requests=7),
    ], USAGE_SCHEMA, "usage_date", day, day)
    params = {"start_date": day, "end_date": day}
    result, _, _ = await run_pipeline("deepseek//usage_cost", org, services, params)
    assert result.status is RunStatus.SUCCESS, result.error
    calc = costs(bq, services, org)
    chat = calc[(day, "deepseek-chat", "standard", "app-a")]
    # 10M x 0.028 + 2M x 0.28 + 1M x 0.42 (V3.2 list, USD per 1M)
    assert (chat["cache_hit_input_cost"], chat["cache_miss_input_cost"], chat["output_cost"]) == \
        (Decimal("0.28"), Decimal("0.56"), Decimal("0.42"))
    assert chat["total_cost"] == Decimal("1.26") and chat["requests"] == 50 and chat["total_tokens"] == 13_000_000
    reasoner = calc[(day, "deepseek-reasoner", "standard", "app-b")]
    # 123,456 x 0.028 + 654,321 x 0.28 + 98,765 x 0.42, per 1M
    assert reasoner["total_cost"] == Decimal("0.003456768") + Decimal("0.18320988") + Decimal("0.0414813")
    assert reasoner["reasoning_tokens"] == 50_000
    assert result.step("transform_cost").result["total_cost_usd"] == "1.49"

    again, _, _ = await run_pipeline("deepseek//usage_cost", org, services, params)
    assert again.status is RunStatus.SUCCESS, again.error
    assert len(rows(bq, services.settings, org, "deepseek_cost_daily")) == 2
    assert costs(bq, services, org)[(day, "deepseek-chat", "standard", "app-a")]["total_cost"] == Decimal("1.26")


async def test_stand_in_chat_usage_and_spend_follow_the_documented_shape():
    async with DeepSeekStandIn(granted="0.001", topped_up="1.00") as server:
        body = {"model": "deepseek-chat", "max_tokens": 1000,
                "messages": [{"role": "system", "content": "you are terse " * 500},
                             {"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.base_url}/chat/completions", json=body, headers=headers) as first:
                one = (await first.json())["usage"]
            body["messages"][1]["content"] = "hello there"
            async with session.post(f"{server.base_url}/chat/completions", json=body, headers=headers) as second:
                two = (await second.json())["usage"]
            async with session.get(f"{server.base_url}/user/balance", headers={"Authorization": "Bearer x"}) as bad:
                assert bad.status == 401 and (await bad.json())["error"]["type"] == "authentication_error"
        assert (one["prompt_cache_hit_tokens"], one["prompt_cache_miss_tokens"]) == (0, 1501)
        assert (two["prompt_cache_hit_tokens"], two["prompt_cache_miss_tokens"]) == (1500, 2)
        assert two["prompt_tokens"] == 1502 and two["total_tokens"] == 2502
        # 1501 x 0.28 + 1000 x 0.42, then 1500 x 0.028 + 2 x 0.28 + 1000 x 0.42 (per 1M), granted first
        spent = (Decimal(1501) * Decimal("0.28") + Decimal(1000) * Decimal("0.42") + Decimal(1500) * Decimal("0.028")
                 + Decimal(2) * Decimal("0.28") + Decimal(1000) * Decimal("0.42")) / 1_000_000
        wallet = server.wallet()
        assert wallet.granted == Decimal(0) and wallet.total == Decimal("1.001") - spent


async def test_registry_validation_call_is_the_balance(stack, bq):
    from convergence.tenancy.validation import check_credential

    server = DeepSeekStandIn(topped_up="1.00")
    services, _ = await stack(server)
    assert (await check_credential(services, "DEEPSEEK", API_KEY)).status == "VALID"
    wrong = "sk-wrong-deepseek-0a1b2c3d4e"
    verdict = await check_credential(services, "DEEPSEEK", wrong)
    assert verdict.status == "INVALID" and verdict.code == "PROVIDER_AUTH_FAILED" and wrong not in verdict.error
    assert [(c.path, c.status) for c in server.calls()] == [("/user/balance", 200), ("/user/balance", 401)]


async def test_each_currency_on_its_own_and_under_recorded_credits_are_inconsistent(stack, bq, clock):
    server = DeepSeekStandIn(currency="CNY", topped_up="100.00")
    server.grant("7.00", currency="USD")
    services, org = await stack(server)
    clock("2026-03-02")
    assert (await run_pipeline("deepseek//balance_snapshot", org, services,
                               {"start_date": "2026-03-01", "end_date": "2026-03-01"}))[0].status is RunStatus.SUCCESS
    server.top_up("20.00", currency="CNY")
    server.spend("1.00", currency="CNY")
    server.spend("2.50", currency="USD")
    load(services, org, "deepseek_balance_credits",
         [{"org_slug": org, "credit_date": "2026-03-02", "currency": "CNY", "amount": "5.00", "kind": "top_up"}],
         CREDITS_SCHEMA, "credit_date", "2026-03-02", "2026-03-02")
    clock("2026-03-03")
    result, _, _ = await run_pipeline("deepseek//balance_snapshot", org, services,
                                      {"start_date": "2026-03-02", "end_date": "2026-03-02"})
    assert result.status is RunStatus.SUCCESS, result.error
    assert result.step("snapshot_balance").result["currencies"] == "CNY,USD"
    spend = {r["currency"]: r for r in rows(bq, services.settings, org, "deepseek_balance_spend_daily")}
    # CNY: 100.00 + 5.00 recorded - 119.00 is negative: the 20.00 top-up was under-recorded.
    assert (spend["CNY"]["status"], spend["CNY"]["spend"], spend["CNY"]["credits_recorded"]) == \
        ("INCONSISTENT", None, Decimal("5"))
    assert (spend["USD"]["status"], spend["USD"]["spend"]) == ("DERIVED", Decimal("2.50"))
    assert result.step("derive_spend").result["inconsistent_days"] == 1
