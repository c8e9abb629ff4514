"""Metrics without the emulators: what each helper counts, bounded labels, live slot gauges (per-org only
within the setting's limit), provider 429s through the real HTTP client, and /metrics on `serve` and on
consume's metrics port. The registry is process-wide, so every check is a delta or uses unique labels."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from convergence.consumer.outcome import Outcome, OutcomeKind
from convergence.consumer.slots import RunSlots
from convergence.observability import metrics
from convergence.observability.metrics import REGISTRY, MetricsObserver, sample
from convergence.pipeline.results import ErrorInfo, PipelineResult, RunStatus, StepResult, StepStatus
from tests.paths import REPO_ROOT

ALLOWED_LABELS = {"subscription", "outcome", "code", "status", "pipeline", "ps_type", "provider", "component",
                  "org", "le"}


@pytest.fixture(autouse=True)
def _quiet_logs():
    """Log lines are not under test here; never depend on how an earlier test left structlog."""
    with capture_logs():
        yield


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_labels_are_only_bounded_ones():
    names = {name for family in REGISTRY.collect() for s in family.samples for name in s.labels}
    assert names <= ALLOWED_LABELS, names - ALLOWED_LABELS


def test_every_metric_is_documented():

    doc = (REPO_ROOT / "docs" / "observability.md").read_text()
    section = doc.split("## Metrics", 1)[1]
    families = {family.name for family in REGISTRY.collect()}
    families |= {"convergence_org_runs_running", "convergence_org_runs_waiting"}  # only with the org limit
    for name in families:
        documented = name if name.endswith(("_seconds", "_messages", "_running", "_waiting")) else f"{name}_total"
        assert documented in section, f"{documented} is not documented in docs/observability.md"


def test_outcomes_and_rejections_by_code():
    sub = unique("sub")
    metrics.record_outcome(sub, Outcome(OutcomeKind.REJECTED, code="UNKNOWN_PIPELINE"))
    before_other = sample("convergence_requests_rejected_total", {"code": "other"})
    metrics.record_outcome(sub, Outcome(OutcomeKind.REJECTED, code="not a code; run_123"))
    metrics.record_outcome(sub, Outcome(OutcomeKind.SUCCEEDED))
    metrics.record_outcome(sub, Outcome(OutcomeKind.RETRY, code="PROVIDER_5XX"))
    assert sample("convergence_outcomes_total", {"subscription": sub, "outcome": "rejected"}) == 2
    assert sample("convergence_outcomes_total", {"subscription": sub, "outcome": "succeeded"}) == 1
    assert sample("convergence_outcomes_total", {"subscription": sub, "outcome": "retry"}) == 1
    assert sample("convergence_requests_rejected_total", {"code": "other"}) == before_other + 1


def test_messages_received_acked_nacked():
    sub = unique("sub")
    for acked in (True, True, False):
        metrics.message_received(sub)
        metrics.message_settled(sub, acked)
    assert sample("convergence_messages_received_total", {"subscription": sub}) == 3
    assert sample("convergence_messages_acked_total", {"subscription": sub}) == 2
    assert sample("convergence_messages_nacked_total", {"subscription": sub}) == 1


def test_subscription_label_is_the_short_name():
    assert metrics.subscription_label("projects/p/subscriptions/pipeline-requests-worker") == \
        "pipeline-requests-worker"


async def test_observer_counts_runs_steps_durations_and_rows():
    pipeline = f"unit/{unique('metrics')}"
    now = datetime.now(UTC)

    def step(step_id: str, ps_type: str, status: StepStatus, ms: int, rows: int) -> StepResult:
        return StepResult(step_id=step_id, ps_type=ps_type, status=status, started_at=now,
                          ended_at=now + timedelta(milliseconds=ms), duration_ms=ms, rows_processed=rows)

    ps_ok, ps_fail = unique("unit.ok"), unique("unit.fail")
    observer = MetricsObserver(pipeline)
    steps = [step("a", ps_ok, StepStatus.SUCCESS, 1500, 10), step("b", ps_fail, StepStatus.FAILED, 20, 0),
             step("c", ps_ok, StepStatus.SKIPPED, 0, 0)]
    for s in steps:
        await observer.step_finished(s, None)

    def run(status: RunStatus, retryable: bool = False) -> PipelineResult:
        error = ErrorInfo(code="X", message="x", retryable=retryable) if status is not RunStatus.SUCCESS else None
        return PipelineResult(pipeline_id="p", run_id="run_1", org_slug="acme", status=status, started_at=now,
                              ended_at=now, duration_ms=2500, steps=steps, error=error)

    await observer.pipeline_finished(run(RunStatus.SUCCESS), None)
    await observer.pipeline_finished(run(RunStatus.FAILED, retryable=True), None)
    await observer.pipeline_finished(run(RunStatus.FAILED), None)
    await observer.pipeline_finished(run(RunStatus.TIMEOUT), None)
    for status in ("SUCCESS", "RETRYING", "FAILED", "TIMEOUT"):
        assert sample("convergence_runs_total", {"pipeline": pipeline, "status": status}) == 1
        assert sample("convergence_run_duration_seconds_count", {"pipeline": pipeline, "status": status}) == 1
    assert sample("convergence_run_duration_seconds_sum", {"pipeline": pipeline, "status": "SUCCESS"}) == 2.5
    assert sample("convergence_run_duration_seconds_bucket",
                  {"pipeline": pipeline, "status": "SUCCESS", "le": "5.0"}) == 1
    assert sample("convergence_steps_total", {"ps_type": ps_ok, "status": "SUCCESS"}) == 1
    assert sample("convergence_steps_total", {"ps_type": ps_ok, "status": "SKIPPED"}) == 1
    assert sample("convergence_steps_total", {"ps_type": ps_fail, "status": "FAILED"}) == 1
    assert sample("convergence_step_duration_seconds_sum", {"ps_type": ps_ok, "status": "SUCCESS"}) == 1.5
    assert sample("convergence_step_duration_seconds_count", {"ps_type": ps_ok, "status": "SKIPPED"}) == 0
    assert sample("convergence_rows_processed_total", {"ps_type": ps_ok}) == 10


def test_unbounded_looking_values_become_other():
    observer = MetricsObserver("../../etc/passwd run_123 with spaces")
    assert observer.pipeline == "other"
    assert MetricsObserver("openai/usage/daily").pipeline == "openai/usage/daily"
    before = sample("convergence_provider_http_responses_total", {"provider": "other", "status": "200"})
    metrics.provider_response("Not A Provider Name!", 200)
    assert sample("convergence_provider_http_responses_total", {"provider": "other", "status": "200"}) == before + 1


def test_org_labels_are_bounded_by_the_limit():
    labels = metrics.OrgLabels(2)
    assert [labels.label(o) for o in ("a", "b", "c", "a", "d", "b")] == ["a", "b", "_other", "a", "_other", "b"]
    assert metrics.OrgLabels(0).enabled is False


class FakePool:
    def __init__(self, subscription: str, slots: RunSlots):
        self.subscription_path = f"projects/p/subscriptions/{subscription}"
        self.slots = slots


def _families() -> dict[str, Any]:
    body, _ = metrics.exposition()
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def _gauge(families: dict[str, Any], name: str, **labels: str) -> float | None:
    for s in families[name].samples if name in families else []:
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


async def test_slot_gauges_aggregate_and_per_org_only_within_the_limit():
    sub = unique("slots")
    slots = RunSlots(total=1, per_org=1, backlog_per_org=10)
    pool = FakePool(sub, slots)
    metrics.track_pool(pool)
    hold = asyncio.Event()

    async def run(org: str) -> None:
        async with slots.acquire(org):
            await hold.wait()

    org_a, org_b, org_c = unique("orga"), unique("orgb"), unique("orgc")
    tasks = [asyncio.create_task(run(org_a))]
    await asyncio.sleep(0.01)
    tasks += [asyncio.create_task(run(o)) for o in (org_a, org_b, org_c)]
    await asyncio.sleep(0.01)
    try:
        metrics.configure(org_label_limit=0)
        families = _families()
        assert _gauge(families, "convergence_runs_running", subscription=sub) == 1
        assert _gauge(families, "convergence_runs_waiting", subscription=sub) == 3
        assert "convergence_org_runs_waiting" not in families  # no org label unless a limit is set

        metrics.configure(org_label_limit=2)
        metrics.org_label(org_a)  # admitted first
        metrics.org_label(org_b)
        families = _families()
        assert _gauge(families, "convergence_org_runs_running", org=org_a) == 1
        assert _gauge(families, "convergence_org_runs_waiting", org=org_a) == 1
        assert _gauge(families, "convergence_org_runs_waiting", org=org_b) == 1
        assert _gauge(families, "convergence_org_runs_waiting", org=org_c) is None  # over the limit
        assert (_gauge(families, "convergence_org_runs_waiting", org="_other") or 0) >= 1
    finally:
        metrics.configure(org_label_limit=0)
        hold.set()
        await asyncio.gather(*tasks)
    families = _families()
    assert _gauge(families, "convergence_runs_running", subscription=sub) == 0
    assert _gauge(families, "convergence_runs_waiting", subscription=sub) == 0


async def test_provider_calls_by_status_through_services_http_429_visible():
    from convergence.httpclient import RetryPolicy
    from convergence.runtime import Services
    from convergence.settings.model import load_settings

    answers = [429, 200]

    async def api(_: web.Request) -> web.Response:
        status = answers.pop(0) if answers else 200
        if status == 429:
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "0"})
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/v1/usage", api)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    provider = unique("prov")
    services = Services(load_settings(environment="development"))
    try:
        http = services.http(provider, policy=RetryPolicy(attempts=3, initial_seconds=0.01, max_seconds=0.02))
        assert http.on_response is metrics.provider_response
        body, _ = await http.request_json("GET", str(server.make_url("/v1/usage")))
        assert body == {"ok": True}
    finally:
        await services.aclose()
        await server.close()
    assert sample("convergence_provider_http_responses_total", {"provider": provider, "status": "429"}) == 1
    assert sample("convergence_provider_http_responses_total", {"provider": provider, "status": "200"}) == 1


class _Handler:
    async def handle(self, data: bytes, attributes: Any, message_id: str, delivery_attempt: int | None, *,
                     deadline_seconds: float | None = None) -> Outcome:
        return Outcome(OutcomeKind.REJECTED, code="SCHEMA_INVALID")


async def test_serve_exposes_metrics_and_counts_push_answers():
    from convergence.consumer.http_app import create_app
    from convergence.settings.model import load_settings

    app = create_app(load_settings(environment="development", push_verify_token=False), _Handler())
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        before = {k: sample(f"convergence_messages_{k}_total", {"subscription": "push"})
                  for k in ("received", "acked", "nacked")}
        rejected = sample("convergence_requests_rejected_total", {"code": "SCHEMA_INVALID"})
        envelope = {"message": {"data": base64.b64encode(b"{}").decode(), "messageId": "m-1"}}
        assert (await client.post("/pubsub/push", json=envelope)).status == 204
        assert (await client.post("/pubsub/push", data=b"not json")).status == 400
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
        open_metrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert open_metrics.headers["Content-Type"].startswith("application/openmetrics-text")
    finally:
        await client.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert _gauge(families, "convergence_messages_received", subscription="push") == before["received"] + 2
    assert _gauge(families, "convergence_messages_acked", subscription="push") == before["acked"] + 1
    assert _gauge(families, "convergence_messages_nacked", subscription="push") == before["nacked"] + 1
    assert _gauge(families, "convergence_requests_rejected", code="SCHEMA_INVALID") == rejected + 1
    assert (_gauge(families, "convergence_push_responses", status="400") or 0) >= 1


async def test_metrics_server_serves_metrics_and_health():
    server = await metrics.start_metrics_server(0, "127.0.0.1")
    try:
        assert server.port > 0
        async with ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{server.port}/health") as response:
                assert response.status == 200 and json.loads(await response.text()) == {"status": "ok"}
            async with session.get(f"http://127.0.0.1:{server.port}/metrics") as response:
                assert response.status == 200
                assert "convergence_messages_received_total" in await response.text()
    finally:
        await server.close()


def test_bigquery_helpers():
    component = unique("bq")
    metrics.bigquery_calls(component, 2)
    metrics.bigquery_bytes(component, metrics.json_rows_bytes([{"a": 1}, {"b": "x"}]))
    assert sample("convergence_bigquery_calls_total", {"component": component}) == 2
    assert sample("convergence_bigquery_bytes_written_total", {"component": component}) == len('{"a":1}\n{"b":"x"}\n')


def test_query_runner_calls_are_counted():
    class Runner:
        def run(self, sql: str, params: Any = None) -> str:
            return sql

        def rows(self, sql: str) -> str:
            return self.run(sql)

    component = unique("q")
    runner = metrics.count_query_calls(Runner(), component)
    assert runner.rows("SELECT 1") == "SELECT 1" and runner.run("x") == "x"
    assert sample("convergence_bigquery_calls_total", {"component": component}) == 2


@pytest.mark.parametrize("status", [102, 200, 201, 202, 204])
def test_push_ack_statuses(status):
    before = sample("convergence_messages_acked_total", {"subscription": "push"})
    metrics.record_push(status)
    assert sample("convergence_messages_acked_total", {"subscription": "push"}) == before + 1
