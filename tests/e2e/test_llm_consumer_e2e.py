"""The LLM pipelines reached the production way: a run request published on the requests topic, the
consumer (streaming pull) runs it with the real org gate, credential store (local keyring), warehouse
Writer and run log; the provider stand-ins serve the usage. Events come back on the events topic."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from convergence.devstack.providers.anthropic_server import AnthropicStandIn, message_usage
from convergence.devstack.providers.openai_server import OpenAIStandIn, completion
from tests import harness
from tests.harness import Platform
from tests.support.llm import CONFIGS, rows

pytestmark = [pytest.mark.emulator, pytest.mark.slow]
OPENAI_KEY = "sk-admin-e2e-3c9f0a5b7d1e2f40"
ANTHROPIC_KEY = "sk-ant-admin01-e2e-77aa00bb11cc"
DAY = "2026-03-02"


@pytest.fixture(scope="module")
def world(local_stack, tmp_path_factory):
    openai = OpenAIStandIn(admin_keys=(OPENAI_KEY,), completions=[
        completion(f"{DAY}T01:00:00Z", "gpt-4o-mini-2024-07-18", uncached=2_000_000, cached=1_000_000,
                   output=500_000),
        completion(f"{DAY}T02:00:00Z", "gpt-x-unlisted", uncached=1_000, output=100)])
    anthropic = AnthropicStandIn(admin_keys=(ANTHROPIC_KEY,), usage=[
        message_usage(f"{DAY}T01:00:00Z", "claude-haiku-4-5-20251001", uncached=1_000_000, cache_read=1_000_000,
                      cache_1h=100_000, output=200_000)])
    openai.start_in_thread()
    anthropic.start_in_thread()
    root = tmp_path_factory.mktemp("llm_e2e")
    # The repo's own configs dir (not the harness's symlinked copy): schema and seed files are named
    # relative to the repository root, and the loader refuses paths that resolve outside configs_dir.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(harness, "make_configs_dir", lambda _root: CONFIGS)
        platform = Platform(local_stack, root, local_keyring_path=root / "keyring.key",
                            openai_base_url=openai.base_url, anthropic_base_url=anthropic.base_url)
    platform.onboard("llm_e2e")
    platform.services.credentials.put("llm_e2e", "OPENAI", OPENAI_KEY)
    platform.services.credentials.put("llm_e2e", "ANTHROPIC", ANTHROPIC_KEY)
    platform.start_consumer()
    yield platform
    platform.close()
    openai.stop_thread()
    anthropic.stop_thread()


def run(platform: Platform, pipeline: str, run_id: str | None = None) -> tuple[str, list[dict]]:
    rid = run_id or f"run_{uuid.uuid4().hex}"
    platform.publish("llm_e2e", pipeline, {"start_date": DAY, "end_date": DAY}, run_id=rid)
    return rid, platform.follower.wait_for(rid, "pipeline_completed", timeout=60)


def test_openai_usage_cost_by_message_exact_and_idempotent(world):
    rid, events = run(world, "openai/cost/usage_cost")
    assert events[-1]["status"] == "SUCCESS", events[-1]
    cost = next(e for e in events if e["event_type"] == "step_completed" and e["step_id"] == "transform_cost")
    # 2M x 0.15 + 1M x 0.075 + 500k x 0.60 per 1M tokens = 0.30 + 0.075 + 0.30
    assert cost["details"]["total_cost_usd"] == "0.68"
    assert cost["details"]["unpriced_models"] == "gpt-x-unlisted" and cost["details"]["unpriced_rows"] == 1
    settings = world.settings
    costs = rows(world.services.bigquery, settings, "llm_e2e", "openai_cost_daily", "is_priced")
    assert [c["total_cost"] for c in costs] == [Decimal("0.675")]
    assert world.run_record(rid, status="SUCCESS").rows_processed > 0

    again, events = run(world, "openai/cost/usage_cost")  # a second run of the same day: one copy
    assert events[-1]["status"] == "SUCCESS"
    assert len(rows(world.services.bigquery, settings, "llm_e2e", "openai_usage_daily_raw")) == 2
    assert len(rows(world.services.bigquery, settings, "llm_e2e", "openai_cost_daily")) == 2


def test_anthropic_usage_cost_by_message(world):
    rid, events = run(world, "anthropic//usage_cost")
    assert events[-1]["status"] == "SUCCESS", events[-1]
    cost = next(e for e in events if e["event_type"] == "step_completed" and e["step_id"] == "transform_cost")
    # 1M x 1.00 + 1M x 0.10 (cache read) + 100k x 2.00 (1h cache write) + 200k x 5.00
    assert cost["details"]["total_cost_usd"] == "2.30"


def test_rotated_key_fails_permanently_without_leaking(world):
    world.services.credentials.put("llm_e2e", "OPENAI", "sk-admin-e2e-rotated-00000000")
    try:
        rid, events = run(world, "openai/cost/usage_cost")
    finally:
        world.services.credentials.put("llm_e2e", "OPENAI", OPENAI_KEY)
    assert events[-1]["status"] == "FAILED"
    failed = next(e for e in events if e["event_type"] == "step_failed" and e["step_id"] == "extract_usage")
    assert failed["error"]["code"] == "PROVIDER_AUTH_FAILED"
    record = world.run_record(rid, status="FAILED")
    assert record.error_code == "PROVIDER_AUTH_FAILED"
    text = repr(events) + repr(record) + repr(world.services.runlog.step_logs(rid, "llm_e2e"))
    assert "sk-admin-e2e-rotated-00000000" not in text and OPENAI_KEY not in text
