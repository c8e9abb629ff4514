"""Metrics and trace propagation end to end on the emulators.

One Platform (own topics and dataset) and one consumer in a thread, with its metrics port on and its
structlog output captured, run a small mixed workload once per module: successes, a write to BigQuery, an
unknown pipeline and a malformed message (rejections), a transient failure that is retried and
dead-lettered, and a request whose trace id only travels in a `traceparent` attribute. Then:
- the consumer's own `/metrics` (scraped over HTTP) shows exactly the matching counts;
- one run's trace id (from a W3C traceparent) is on each of its log lines, run-log rows and events.

The registry is process-wide (other modules run consumers too), so counts are deltas from a scrape taken
just before the workload.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from convergence.observability import logging as obs_logging
from convergence.observability.logging import configure_logging
from convergence.observability.tracing import cloud_trace, trace_id_from_headers
from convergence.schemas import RunRequest
from tests.harness import Platform

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

ORG = "obs_org"
PROJECT = "obs-project"
TRACE = "0af7651916cd43dd8448eb211c80319c"
BARE_TRACE = "b7ad6b7169203331b7ad6b7169203331"
TRACE_FIELD = "logging.googleapis.com/trace"


class LogSink:
    """A structlog logger that keeps rendered JSON lines (thread-safe: the consumer logs from its thread)."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            self._lines.append(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            lines = list(self._lines)
        return [json.loads(line) for line in lines if line.startswith("{")]


Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:  # noqa: S310
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@dataclass
class Observed:
    platform: Platform
    sink: LogSink
    port: int
    before: Scrape
    ids: dict[str, str] = field(default_factory=dict)
    after: Scrape = field(default_factory=dict)

    def delta(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return self.after.get(key, 0.0) - self.before.get(key, 0.0)

    def value(self, name: str, **labels: str) -> float | None:
        return self.after.get((name, tuple(sorted(labels.items()))))

    def run_rows(self, run_id: str) -> list[dict[str, Any]]:
        from convergence.warehouse.query import QueryRunner

        runlog = self.platform.services.runlog
        return QueryRunner(self.platform.services.bigquery, self.platform.settings).rows(
            f"SELECT `status`, `attempt`, `trace_id`, `error_code` FROM `{runlog.runs_table}` "  # noqa: S608
            "WHERE `run_id` = @run_id", {"run_id": run_id})

    def log_lines(self, run_id: str) -> list[dict[str, Any]]:
        return [r for r in self.sink.records() if r.get("run_id") == run_id]


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def observed(local_stack, tmp_path_factory):
    saved_config, saved_project = structlog.get_config(), obs_logging._project_id
    sink = LogSink()
    configure_logging("INFO", "json", project_id=PROJECT)
    structlog.configure(logger_factory=lambda *_: sink)
    platform = Platform(local_stack, tmp_path_factory.mktemp("observability"), metrics_port=0,
                        http_host="127.0.0.1", consumer_workers=8, per_org_concurrency=8)
    try:
        platform.onboard(ORG)
        consumer = platform.start_consumer()
        deadline = time.monotonic() + 30
        while consumer.service.metrics_server is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert consumer.service.metrics_server is not None, "metrics port never opened"
        port = consumer.service.metrics_server.port
        observed = Observed(platform, sink, port, scrape(port))
        ids = observed.ids
        requests = platform.services.requests

        # The trace id an HTTP door would take from the caller's W3C traceparent header.
        trace = trace_id_from_headers({"traceparent": f"00-{TRACE}-b7ad6b7169203331-01"})
        assert trace == TRACE
        ids["traced"] = requests.publish_run(ORG, "testing/consumer/slow_rows", {"date": "2026-11-02", "seconds": 0},
                                             run_id=new_run_id(), trace_id=trace)
        ids["ok1"] = platform.publish(ORG, "testing/consumer/ok", run_id=new_run_id())
        ids["ok2"] = platform.publish(ORG, "testing/consumer/ok", run_id=new_run_id())
        ids["unknown"] = platform.publish(ORG, "testing/consumer/nope", run_id=new_run_id())
        ids["malformed"] = new_run_id()
        platform.publish_raw(b"{not json", run_id=ids["malformed"], org_slug=ORG)
        ids["transient"] = platform.publish(ORG, "testing/consumer/transient", run_id=new_run_id())
        # A publisher that only sets a traceparent attribute (body trace_id null).
        bare = RunRequest.create(ORG, "testing/consumer/ok", run_id=new_run_id(), trace_id=None)
        ids["bare"] = bare.run_id
        platform.publish_raw(bare.to_json(), **bare.attributes(), traceparent=f"00-{BARE_TRACE}-00f067aa0ba902b7-01")

        follower = platform.follower
        for key in ("traced", "ok1", "ok2", "bare"):
            follower.wait_for(ids[key], "pipeline_completed")
        for key in ("unknown", "malformed"):
            follower.wait_for(ids[key], "request_rejected")
        follower.wait_for(ids["transient"], "dead_lettered", timeout=60)

        # Acks follow the last event by a moment: wait until the scrape has settled.
        requests_sub = platform.settings.requests_subscription
        dead_sub = platform.settings.dead_letter_subscription
        deadline = time.monotonic() + 20
        while True:
            observed.after = scrape(port)
            handed_off = observed.delta("convergence_messages_handed_off_total", subscription=requests_sub)
            settled = (observed.delta("convergence_messages_acked_total", subscription=requests_sub) >= 6 + handed_off
                       and observed.delta("convergence_messages_nacked_total", subscription=requests_sub) >= 5
                       and observed.delta("convergence_messages_acked_total", subscription=dead_sub) >= 1
                       and observed.value("convergence_outstanding_messages", subscription=requests_sub) == 0)
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        yield observed
    finally:
        platform.close()
        structlog.configure(**saved_config)
        obs_logging._project_id = saved_project


def test_metrics_show_the_workload(observed):
    d = observed.delta
    requests_sub = observed.platform.settings.requests_subscription
    dead_sub = observed.platform.settings.dead_letter_subscription
    # 4 successes + 2 rejections acked; 5 attempts of the transient run nacked; 1 dead letter drained.
    # One org's burst may also be handed off (republished, acked) while its slots are busy: those
    # deliveries are received and acked on top, and counted as handed off.
    handed_off = d("convergence_messages_handed_off_total", subscription=requests_sub)
    received = d("convergence_messages_received_total", subscription=requests_sub)
    acked = d("convergence_messages_acked_total", subscription=requests_sub)
    nacked = d("convergence_messages_nacked_total", subscription=requests_sub)
    assert (received - handed_off, acked - handed_off, nacked) == (11, 6, 5)
    assert received == acked + nacked  # every delivery settled
    assert d("convergence_messages_received_total", subscription=dead_sub) == 1
    assert d("convergence_messages_acked_total", subscription=dead_sub) == 1
    assert d("convergence_outcomes_total", subscription=requests_sub, outcome="succeeded") == 4
    assert d("convergence_outcomes_total", subscription=requests_sub, outcome="rejected") == 2
    assert d("convergence_outcomes_total", subscription=requests_sub, outcome="retry") == 5
    assert d("convergence_outcomes_total", subscription=dead_sub, outcome="failed") == 1
    assert d("convergence_requests_rejected_total", code="UNKNOWN_PIPELINE") == 1
    assert d("convergence_requests_rejected_total", code="MALFORMED_JSON") == 1
    assert d("convergence_dead_lettered_total") == 1

    assert d("convergence_runs_total", pipeline="testing/consumer/ok", status="SUCCESS") == 3
    assert d("convergence_runs_total", pipeline="testing/consumer/slow_rows", status="SUCCESS") == 1
    assert d("convergence_runs_total", pipeline="testing/consumer/transient", status="RETRYING") == 5
    assert d("convergence_runs_total", pipeline="testing/consumer/transient", status="FAILED") == 0
    assert d("convergence_run_duration_seconds_count", pipeline="testing/consumer/ok", status="SUCCESS") == 3
    assert d("convergence_steps_total", ps_type="sample.fail", status="FAILED") == 5
    assert d("convergence_step_duration_seconds_count", ps_type="demo.rows", status="SUCCESS") == 1
    assert d("convergence_rows_processed_total", ps_type="demo.rows") == 150
    assert d("convergence_rows_processed_total", ps_type="sample.sleep") == 3 * 7 + 1

    # BigQuery: the run log's inserts and queries, the demo.rows write (load + MERGE), bytes sent.
    assert d("convergence_bigquery_calls_total", component="writer") >= 3
    assert d("convergence_bigquery_bytes_written_total", component="writer") > 150 * 50
    # Counted as they happen (lookups and inserts; concurrent runs share them:
    # tests/unit/consumer/test_handler_batching.py).
    assert d("convergence_bigquery_calls_total", component="runlog") >= 2
    assert d("convergence_bigquery_bytes_written_total", component="runlog") > 0

    # Nothing held once the workload is done; no org label unless the setting asks for one.
    assert observed.value("convergence_outstanding_messages", subscription=requests_sub) == 0
    assert observed.value("convergence_runs_waiting", subscription=requests_sub) == 0
    assert observed.value("convergence_runs_running", subscription=requests_sub) == 0
    assert not any(name.startswith("convergence_org_") for name, _ in observed.after)
    # No run id, message id or trace id ever becomes a label value.
    values = {v for _, labels in observed.after for _, v in labels}
    assert not any(run_id in values for run_id in observed.ids.values())
    assert TRACE not in values


def test_metrics_port_serves_health(observed):
    with urllib.request.urlopen(f"http://127.0.0.1:{observed.port}/health", timeout=10) as response:  # noqa: S310
        body = json.loads(response.read())
        assert response.status == 200 and body["status"] == "ok" and all(p["ok"] for p in body["pools"])


def test_one_runs_trace_id_is_on_its_log_lines_run_log_rows_and_events(observed):
    rid = observed.ids["traced"]
    lines = observed.log_lines(rid)
    messages = [line["message"] for line in lines]
    assert "run request handled" in messages and "warehouse write" in messages  # loop and worker thread
    for line in lines:
        assert line["trace_id"] == TRACE, line
        assert line[TRACE_FIELD] == cloud_trace(PROJECT, TRACE), line
    # ...and the trace id is on no other run's lines.
    assert {line.get("run_id") for line in observed.sink.records() if line.get("trace_id") == TRACE} == {rid}

    rows = observed.run_rows(rid)
    assert {row["status"] for row in rows} == {"RUNNING", "SUCCESS"}
    assert {row["trace_id"] for row in rows} == {TRACE}
    assert observed.platform.services.runlog.latest_run(rid, ORG).trace_id == TRACE

    events = observed.platform.follower.of(rid)
    assert [e["event_type"] for e in events][0] == "pipeline_started"
    assert [e["event_type"] for e in events][-1] == "pipeline_completed"
    assert len(events) == 6
    assert {e["trace_id"] for e in events} == {TRACE}


def test_a_dead_lettered_run_keeps_one_trace_id_across_attempts(observed):
    rid = observed.ids["transient"]
    events = observed.platform.follower.of(rid)
    trace = events[0]["trace_id"]
    assert trace and len(events) == 5 * 4 + 1 and events[-1]["event_type"] == "dead_lettered"
    assert {e["trace_id"] for e in events} == {trace}
    rows = observed.run_rows(rid)
    assert len([r for r in rows if r["error_code"] == "DEAD_LETTERED"]) >= 1
    assert {r["trace_id"] for r in rows} == {trace}
    lines = observed.log_lines(rid)
    assert "run request dead-lettered" in [line["message"] for line in lines]
    assert sum(line["message"] == "run request handled" for line in lines) == 5
    assert {line["trace_id"] for line in lines} == {trace}


def test_a_traceparent_attribute_is_used_when_the_body_has_no_trace_id(observed):
    rid = observed.ids["bare"]
    assert {e["trace_id"] for e in observed.platform.follower.of(rid)} == {BARE_TRACE}
    assert {r["trace_id"] for r in observed.run_rows(rid)} == {BARE_TRACE}
    assert {line["trace_id"] for line in observed.log_lines(rid)} == {BARE_TRACE}


def test_a_rejection_carries_the_publishers_trace_id(observed):
    rid = observed.ids["unknown"]
    events = observed.platform.follower.of(rid)
    assert [e["event_type"] for e in events] == ["request_rejected"]
    trace = events[0]["trace_id"]
    assert trace and {r["trace_id"] for r in observed.run_rows(rid)} == {trace}
    assert {line["trace_id"] for line in observed.log_lines(rid)} == {trace}
