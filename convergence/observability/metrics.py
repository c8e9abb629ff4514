"""Prometheus metrics: one registry for the process, served on `/metrics` (serve) and on the metrics port
(consume). Names and labels are documented in docs/observability.md ("## Metrics").

Cardinality rules, enforced here rather than trusted at call sites:
- no run ids, message ids or trace ids in labels, ever;
- `pipeline` is the pipeline path from configs/ (bounded by the files) and is only set once the config
  loaded, so an unknown pipeline in a request never becomes a label value;
- codes, providers and ps_types are code-defined names; anything that does not look like one is `other`;
- `org` exists only when `metrics_org_label_limit` > 0, and then for at most that many orgs per process
  (the first ones seen); every other org is summed into `org="_other"`.

Values live in a dedicated CollectorRegistry (`REGISTRY`), so tests read them with
`REGISTRY.get_sample_value(...)` and nothing leaks into prometheus_client's global registry.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from convergence.pipeline.executor import RunObserver

REGISTRY = CollectorRegistry(auto_describe=True)
OTHER = "other"
OTHER_ORG = "_other"
PUSH = "push"

_RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
# Stages of one run on the consumer: milliseconds on a quiet stack, seconds when BigQuery or Pub/Sub lag.
_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

# -- messages ----------------------------------------------------------------------------------------------
MESSAGES_RECEIVED = Counter(
    "convergence_messages_received_total", "Messages delivered to this process (pull or push).",
    ["subscription"], registry=REGISTRY)
MESSAGES_ACKED = Counter(
    "convergence_messages_acked_total", "Messages acked (push: answered 2xx).", ["subscription"],
    registry=REGISTRY)
MESSAGES_NACKED = Counter(
    "convergence_messages_nacked_total", "Messages nacked: redelivered later (push: answered non-2xx).",
    ["subscription"], registry=REGISTRY)
MESSAGES_HANDED_OFF = Counter(
    "convergence_messages_handed_off_total",
    "Messages republished instead of run here (org over its backlog, push run too long), then acked.",
    ["subscription"], registry=REGISTRY)
OUTSTANDING = Gauge(
    "convergence_outstanding_messages", "Messages held by this process: running or waiting for a run slot.",
    ["subscription"], registry=REGISTRY)
OUTCOMES = Counter(
    "convergence_outcomes_total", "Handler outcomes (the ack policy's cases) by subscription.",
    ["subscription", "outcome"], registry=REGISTRY)
REJECTED = Counter(
    "convergence_requests_rejected_total",
    "Run requests rejected (acked, never retried) by reason code.", ["code"], registry=REGISTRY)
DEAD_LETTERED = Counter(
    "convergence_dead_lettered_total", "Run requests Pub/Sub gave up on, drained from the dead-letter topic.",
    registry=REGISTRY)
PUSH_RESPONSES = Counter(
    "convergence_push_responses_total", "Answers of the push endpoint by HTTP status.", ["status"],
    registry=REGISTRY)

# -- runs and steps ----------------------------------------------------------------------------------------
RUNS = Counter(
    "convergence_runs_total",
    "Finished run attempts by pipeline and status (RETRYING: transient failure, the message is redelivered).",
    ["pipeline", "status"], registry=REGISTRY)
RUN_DURATION = Histogram(
    "convergence_run_duration_seconds", "Duration of run attempts.", ["pipeline", "status"],
    buckets=_RUN_BUCKETS, registry=REGISTRY)
STEPS = Counter(
    "convergence_steps_total", "Finished steps by processor and status (SKIPPED included).",
    ["ps_type", "status"], registry=REGISTRY)
STEP_DURATION = Histogram(
    "convergence_step_duration_seconds", "Duration of executed steps (not SKIPPED).", ["ps_type", "status"],
    buckets=_STEP_BUCKETS, registry=REGISTRY)
ROWS = Counter(
    "convergence_rows_processed_total", "Rows processed by steps, by processor.", ["ps_type"],
    registry=REGISTRY)

# -- stages of a run on the consumer (no labels: one series each) -----------------------------------------
SLOT_WAIT = Histogram(
    "convergence_slot_wait_seconds",
    "Time a received run waited for a run slot (global or per-org cap), reading its org's plan cap included.",
    buckets=_STAGE_BUCKETS, registry=REGISTRY)
ADMISSION_WAIT = Histogram(
    "convergence_admission_wait_seconds",
    "Time a run waited for admission (its share of a batched succeeded check, org gate and quota count).",
    buckets=_STAGE_BUCKETS, registry=REGISTRY)
RUNLOG_COMMIT = Histogram(
    "convergence_runlog_commit_seconds",
    "Duration of a run-log group commit (one BigQuery write for the staged rows of many runs).",
    buckets=_STAGE_BUCKETS, registry=REGISTRY)
EVENT_PUBLISH = Histogram(
    "convergence_event_publish_seconds",
    "Time from publishing a run's pipeline_completed event to Pub/Sub confirming it (or giving up).",
    buckets=_STAGE_BUCKETS, registry=REGISTRY)

# -- dependencies ------------------------------------------------------------------------------------------
PROVIDER_HTTP = Counter(
    "convergence_provider_http_responses_total",
    "Provider API answers by provider and HTTP status (every try, retries included: 429s show here).",
    ["provider", "status"], registry=REGISTRY)
BIGQUERY_CALLS = Counter(
    "convergence_bigquery_calls_total", "BigQuery API calls (inserts, load jobs, queries, table calls).",
    ["component"], registry=REGISTRY)
BIGQUERY_BYTES = Counter(
    "convergence_bigquery_bytes_written_total", "JSON bytes sent to BigQuery by streaming inserts and loads.",
    ["component"], registry=REGISTRY)

_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_NAME = re.compile(r"^[a-z][a-z0-9_.:\-]{0,63}$")
_PIPELINE = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+){0,7}$")
_STATUS = re.compile(r"^[A-Z_]{1,20}$")


def _code(value: Any) -> str:
    text = str(getattr(value, "value", value) or "")
    return text if _CODE.fullmatch(text) else OTHER


def _name(value: Any) -> str:
    text = str(value or "")
    return text if _NAME.fullmatch(text) else OTHER


def _status(value: Any) -> str:
    text = str(getattr(value, "value", value) or "")
    return text if _STATUS.fullmatch(text) else OTHER


def _pipeline(value: Any) -> str:
    text = str(value or "")
    return text if len(text) <= 200 and _PIPELINE.fullmatch(text) else OTHER


def subscription_label(subscription_path: str) -> str:
    """`projects/P/subscriptions/NAME` -> NAME (a handful per process, fixed by settings)."""
    return subscription_path.rsplit("/", 1)[-1] or OTHER


# -- org labels: bounded by a setting ----------------------------------------------------------------------
class OrgLabels:
    """At most `limit` org label values per process: the first orgs seen; the rest are `_other`."""

    def __init__(self, limit: int = 0):
        self.limit = limit
        self._admitted: set[str] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def label(self, org: str) -> str:
        with self._lock:
            if org in self._admitted:
                return org
            if len(self._admitted) < self.limit:
                self._admitted.add(org)
                return org
        return OTHER_ORG


_orgs = OrgLabels(0)


def configure(settings: Any = None, *, org_label_limit: int | None = None) -> None:
    """Apply settings (`metrics_org_label_limit`). Orgs already given a label keep it."""
    global _orgs
    limit = org_label_limit if org_label_limit is not None else int(getattr(settings, "metrics_org_label_limit", 0))
    if limit != _orgs.limit:
        _orgs = OrgLabels(limit)


def org_label(org: str) -> str | None:
    """The label value for `org`, or None when per-org metrics are off."""
    return _orgs.label(org) if _orgs.enabled else None


# -- live gauges from the pools and their run slots --------------------------------------------------------
_pools: weakref.WeakSet[Any] = weakref.WeakSet()


def track_pool(pool: Any) -> None:
    """Report this SubscriberPool's run slots (running / waiting) at every scrape while it lives."""
    _pools.add(pool)


def _slot_counts(slots: Any, name: str) -> dict[str, int]:
    # RunSlots keeps per-org counts in dicts mutated on the event loop; a scrape runs on another thread
    # (consume's metrics port) or on the loop (serve). Copying a small dict is atomic under the GIL.
    for _ in range(3):
        try:
            return {org: n for org, n in dict(getattr(slots, name, {})).items() if n}
        except RuntimeError:  # changed size during the copy: try again
            continue
    return {}


class _SlotsCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        running = GaugeMetricFamily("convergence_runs_running", "Runs holding a run slot.", labels=["subscription"])
        waiting = GaugeMetricFamily(
            "convergence_runs_waiting", "Received runs waiting for a run slot (global or per-org cap).",
            labels=["subscription"])
        org_running: dict[str, int] = {}
        org_waiting: dict[str, int] = {}
        totals: dict[str, list[int]] = {}
        for pool in list(_pools):
            slots = getattr(pool, "slots", None)
            if slots is None:
                continue
            by_org_running = _slot_counts(slots, "_running")
            by_org_waiting = _slot_counts(slots, "_waiting")
            total = totals.setdefault(subscription_label(pool.subscription_path), [0, 0])
            total[0] += sum(by_org_running.values())
            total[1] += sum(by_org_waiting.values())
            if _orgs.enabled:
                for source, target in ((by_org_running, org_running), (by_org_waiting, org_waiting)):
                    for org, count in source.items():
                        label = _orgs.label(org)
                        target[label] = target.get(label, 0) + count
        for subscription, (run, wait) in sorted(totals.items()):
            running.add_metric([subscription], run)
            waiting.add_metric([subscription], wait)
        yield running
        yield waiting
        if _orgs.enabled:
            by_org_r = GaugeMetricFamily(
                "convergence_org_runs_running", "Runs holding a run slot, per org (bounded: see docs).",
                labels=["org"])
            by_org_w = GaugeMetricFamily(
                "convergence_org_runs_waiting", "Runs waiting for a run slot, per org (bounded: see docs).",
                labels=["org"])
            for org, count in sorted(org_running.items()):
                by_org_r.add_metric([org], count)
            for org, count in sorted(org_waiting.items()):
                by_org_w.add_metric([org], count)
            yield by_org_r
            yield by_org_w

    def describe(self) -> Iterable[Any]:
        return []  # dynamic families: nothing to check at registration


REGISTRY.register(_SlotsCollector())


# -- recording helpers (one-liners at the call sites) ------------------------------------------------------
def message_received(subscription: str) -> None:
    MESSAGES_RECEIVED.labels(subscription).inc()


def message_settled(subscription: str, acked: bool) -> None:
    (MESSAGES_ACKED if acked else MESSAGES_NACKED).labels(subscription).inc()


def record_outcome(subscription: str, outcome: Any) -> None:
    """Counts a handler Outcome; rejections also by reason code."""
    kind = str(getattr(outcome.kind, "value", outcome.kind))
    OUTCOMES.labels(subscription, _name(kind)).inc()
    if kind == "rejected":
        REJECTED.labels(_code(outcome.code)).inc()


def record_push(status: int) -> None:
    """One push request answered: received, then acked (102/200/201/202/204) or nacked."""
    PUSH_RESPONSES.labels(str(int(status))).inc()
    MESSAGES_RECEIVED.labels(PUSH).inc()
    message_settled(PUSH, int(status) in (102, 200, 201, 202, 204))


def provider_response(provider: str, status: int) -> None:
    """httpclient.HttpClient's on_response hook."""
    PROVIDER_HTTP.labels(_name(provider), str(int(status)) if 100 <= int(status) <= 599 else OTHER).inc()


def bigquery_calls(component: str, count: int = 1) -> None:
    if count:
        BIGQUERY_CALLS.labels(component).inc(count)


def bigquery_bytes(component: str, size: int) -> None:
    if size:
        BIGQUERY_BYTES.labels(component).inc(size)


def json_rows_bytes(rows: Iterable[Mapping[str, Any]]) -> int:
    """Approximate request size of rows sent as JSON (what a streaming insert carries)."""
    return sum(len(json.dumps(row, default=str, separators=(",", ":"))) + 1 for row in rows)


def count_query_calls(runner: Any, component: str) -> Any:
    """Counts every statement a warehouse.query.QueryRunner runs (its `run`), under `component`."""
    run = runner.run

    def counted(*args: Any, **kwargs: Any) -> Any:
        bigquery_calls(component)
        return run(*args, **kwargs)

    runner.run = counted
    return runner


class MetricsObserver(RunObserver):
    """Executor observer: runs, steps, durations and rows.

    `pipeline` is the request's pipeline path; the handler adds this observer only after the config
    loaded, so the label is bounded by configs/."""

    def __init__(self, pipeline: str):
        self.pipeline = _pipeline(pipeline)

    async def pipeline_started(self, config: Any, context: Any) -> None:
        return None

    async def step_started(self, step: Any, context: Any) -> None:
        return None

    async def step_finished(self, result: Any, context: Any) -> None:
        ps_type = _name(result.ps_type)
        status = _status(result.status)
        STEPS.labels(ps_type, status).inc()
        if status != "SKIPPED":
            STEP_DURATION.labels(ps_type, status).observe(max(0, result.duration_ms or 0) / 1000)
        if result.rows_processed:
            ROWS.labels(ps_type).inc(result.rows_processed)

    async def pipeline_finished(self, result: Any, context: Any) -> None:
        status = "RETRYING" if getattr(result, "retryable", False) else _status(result.status)
        RUNS.labels(self.pipeline, status).inc()
        RUN_DURATION.labels(self.pipeline, status).observe(max(0, result.duration_ms or 0) / 1000)


# -- exposition --------------------------------------------------------------------------------------------
def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """(body, content type) for a scrape, negotiated on the Accept header (text or OpenMetrics)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(REGISTRY), content_type


async def metrics_handler(request: Any) -> Any:
    """aiohttp handler for GET /metrics."""
    from aiohttp import web

    body, content_type = exposition(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def health_handler(_: Any) -> Any:
    from aiohttp import web

    return web.json_response({"status": "ok"})


class MetricsServer:
    """`/metrics` and `/health` on their own port (consume has no other HTTP server). Runs on the loop."""

    def __init__(self, runner: Any, host: str, port: int):
        self.runner = runner
        self.host = host
        self.port = port

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_metrics_server(port: int, host: str = "0.0.0.0") -> MetricsServer:  # noqa: S104 - containers
    """Listen on host:port (port 0: any free port; the bound one is `.port`)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/health", health_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []  # noqa: SLF001 - the bound port when port=0
    bound = sockets[0].getsockname()[1] if sockets else port
    return MetricsServer(runner, host, bound)


def sample(name: str, labels: Mapping[str, str] | None = None) -> float:
    """A sample's current value (0 when absent): for tests and the CLI."""
    return REGISTRY.get_sample_value(name, dict(labels or {})) or 0.0
