"""OpenTelemetry spans for runs: the publish of a run request, its receive, the run, its steps and the events
it publishes, all in the run's trace (its `trace_id`, observability/tracing.py).

Off unless `TRACING_EXPORTER` names an exporter (`cloud_trace` in production, `console` to look at spans
locally). Off, nothing here creates a span object: `TracingObserver.wrap` returns the observer it was given,
the Pub/Sub clients keep their tracing off, and the publish helpers return at once.

On, the Pub/Sub client library's own tracing is turned on too (`enable_open_telemetry_tracing`): it makes
the `<topic> create` span of a publish and the `<subscription> subscribe` span of a delivery, and carries
the W3C context in the `googclient_traceparent` message attribute. What this module adds:
- a publish made for a run request starts the run's trace with the run's trace id (`run_trace`), so the
  client's create span, and everything after it, has the id the logs and the run log carry;
- the pool runs each delivery with the client's subscribe span current (`delivery_context`);
- `TracingObserver` makes the run span (child of the subscribe span, else of the attributes' traceparent,
  else a root with the run's trace id) and one span per step; events published by a step are the
  client's create spans under that step's span, so their attributes carry the step's context.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from convergence.observability.tracing import is_w3c_trace_id, parse_traceparent
from convergence.pipeline import RunObserver

TRACER_NAME = "convergence"
EXPORTERS = ("none", "cloud_trace", "console")
# The client library's attribute prefix for the W3C context it injects (googclient_traceparent).
CLIENT_PREFIX = "googclient_"

_lock = threading.Lock()
_enabled = False
_provider: Any = None
_processors: dict[Any, Any] = {}
# The trace id the next root span gets (run_trace): the run's, so its spans and its log lines agree.
_next_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("convergence_next_trace_id",
                                                                           default=None)
_PROPAGATOR = TraceContextTextMapPropagator()
_ENDED_SPAN_WARNINGS = frozenset({"Calling end() on an ended span.", "Tried calling _add_event on an ended span."})


def enabled() -> bool:
    """Whether spans are made in this process (cheap: read on every publish and run)."""
    return _enabled


def configure_tracing(settings: Any = None, *, exporter: Any = None) -> bool:
    """Turn tracing on for this process when `settings.tracing_exporter` (or an explicit `exporter`, as
    tests pass) asks for it; idempotent. True when tracing is on."""
    global _enabled
    kind = getattr(settings, "tracing_exporter", "none") if exporter is None else "given"
    if kind == "none":
        return _enabled
    with _lock:
        key = kind if exporter is None else id(exporter)
        if key not in _processors:
            provider = _sdk_provider(getattr(settings, "tracing_sample_ratio", 1.0))
            _processors[key] = processor = _processor(kind, settings, exporter)
            provider.add_span_processor(processor)
        _enabled = True
    return True


def _sdk_provider(ratio: float) -> Any:
    global _provider
    if _provider is None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        # The Pub/Sub client ends a delivery's process span when our callback returns and again at its ack:
        # the SDK's warning about that second end would be logged for every message.
        logging.getLogger("opentelemetry.sdk.trace").addFilter(_drop_ended_span_warnings)
        _provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)), id_generator=_RunIdGenerator(),
                                   resource=Resource.create({"service.name": "convergence"}))
        trace.set_tracer_provider(_provider)
    return _provider


def _drop_ended_span_warnings(record: logging.LogRecord) -> bool:
    return record.getMessage() not in _ENDED_SPAN_WARNINGS


def _processor(kind: str, settings: Any, exporter: Any) -> Any:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    if kind == "given":
        return SimpleSpanProcessor(exporter)
    if kind == "console":  # stderr: the CLI's stdout is its output (--json)
        return SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
    if kind == "cloud_trace":
        from google.auth import exceptions as auth_exceptions
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

        try:
            exporter = CloudTraceSpanExporter(project_id=settings.gcp_project_id)
        except auth_exceptions.DefaultCredentialsError as error:  # startup reports it as a credentials problem
            first = str(error.args[0] if error.args else error).splitlines()[0]
            raise auth_exceptions.DefaultCredentialsError(
                f"TRACING_EXPORTER=cloud_trace needs Google credentials (or set TRACING_EXPORTER=none): {first}"
            ) from error
        # Batched: spans leave on a background thread, never on a run's path.
        return BatchSpanProcessor(exporter)
    raise ValueError(f"TRACING_EXPORTER must be one of {', '.join(EXPORTERS)}, not {kind!r}")


def force_flush(timeout_millis: int = 10_000) -> bool:
    """Export the spans still buffered (at shutdown; tests)."""
    return _provider.force_flush(timeout_millis) if _provider is not None else True


def disable() -> None:
    """Stop making spans in this process (tests that turned tracing on). Clients built while it was on
    keep their own tracing until closed."""
    global _enabled
    _enabled = False


def shutdown() -> None:
    if _provider is not None:
        _provider.shutdown()


class _RunIdGenerator(RandomIdGenerator):
    """Random ids, except that a root span started under `run_trace` gets the run's trace id."""

    def generate_trace_id(self) -> int:
        wanted = _next_trace_id.get()
        return wanted if wanted is not None else random.getrandbits(128)


@contextlib.contextmanager
def run_trace(trace_id: str | None) -> Iterator[None]:
    """Spans started inside belong to the run's trace: the current span when it already is in that trace,
    else a new root with that trace id. Publishers wrap a run request's publish in it (the client starts
    its create span inside `publish`). Nothing happens when tracing is off or the id is not a W3C id."""
    if not _enabled or not is_w3c_trace_id(trace_id):
        yield
        return
    wanted = int(trace_id, 16)  # type: ignore[arg-type]
    current = trace.get_current_span().get_span_context()
    if current.is_valid and current.trace_id == wanted:
        yield
        return
    token = otel_context.attach(otel_context.Context())  # no current span: the next span is a root
    id_token = _next_trace_id.set(wanted)
    try:
        yield
    finally:
        _next_trace_id.reset(id_token)
        otel_context.detach(token)


@contextlib.contextmanager
def caller_context(headers: Mapping[str, str] | None) -> Iterator[None]:
    """Inside, the HTTP caller's span (its `traceparent` header) is the current span: the run requests
    published there are its children. Nothing happens when tracing is off or the header is absent."""
    if not _enabled or not headers or parse_traceparent(headers.get("traceparent")) is None:
        yield
        return
    token = otel_context.attach(_PROPAGATOR.extract(headers))
    try:
        yield
    finally:
        otel_context.detach(token)


def delivery_context(message: Any) -> contextvars.Context | None:
    """A context for one pulled delivery's task in which the client's subscribe span is current; None
    when the client made none (tracing off), so the task gets the usual copy."""
    data = getattr(message, "opentelemetry_data", None) if _enabled else None
    span = getattr(data, "subscribe_span", None)
    if span is None:
        return None
    ctx = contextvars.copy_context()
    ctx.run(otel_context.attach, trace.set_span_in_context(span))
    return ctx


class _AttributesGetter(Getter):
    """Reads `traceparent`/`tracestate` from message attributes, the client's prefixed ones first."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(CLIENT_PREFIX + key) or carrier.get(key)
        return [value] if value else None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


def context_from_attributes(attributes: Mapping[str, str] | None) -> Any:
    """The remote span context a message's attributes carry (`googclient_traceparent`, else `traceparent`)."""
    if not attributes:
        return None
    if parse_traceparent(attributes.get(CLIENT_PREFIX + "traceparent") or attributes.get("traceparent")) is None:
        return None
    ctx = _PROPAGATOR.extract(attributes, getter=_AttributesGetter())
    span_context = trace.get_current_span(ctx).get_span_context()
    return span_context if span_context.is_valid else None


class TracingObserver(RunObserver):
    """A span for the run and one per step around another observer's hooks: started before it is told,
    ended after, so what the inner observers publish (events) is a child of the run's or step's span."""

    @classmethod
    def wrap(cls, inner: RunObserver, request: Any, attributes: Mapping[str, str] | None = None) -> RunObserver:
        """`inner` itself when tracing is off: no span objects on the hot path."""
        return cls(inner, request, attributes) if _enabled else inner

    def __init__(self, inner: RunObserver, request: Any, attributes: Mapping[str, str] | None):
        self.inner = inner
        self.request = request
        self.attributes = attributes
        self.tracer = trace.get_tracer(TRACER_NAME)
        self.run_span: Any = None
        self._steps: dict[str, tuple[Any, object]] = {}

    def _parent(self) -> tuple[Any, list[Any]]:
        """(parent context, links): the current span (the subscribe span) when it is in the run's trace,
        else the attributes' context when it is, else a root with the run's trace id; the others linked."""
        wanted = int(self.request.trace_id, 16) if is_w3c_trace_id(self.request.trace_id) else None
        current = trace.get_current_span().get_span_context()
        remote = context_from_attributes(self.attributes)
        candidates = [c for c in (current, remote) if c is not None and c.is_valid]
        for candidate in candidates:
            if wanted is None or candidate.trace_id == wanted:
                links = [trace.Link(c) for c in candidates if c is not candidate]
                return trace.set_span_in_context(trace.NonRecordingSpan(candidate)), links
        return otel_context.Context(), [trace.Link(c) for c in candidates]

    async def pipeline_started(self, config: Any, context: Any) -> None:
        parent, links = self._parent()
        wanted = self.request.trace_id if is_w3c_trace_id(self.request.trace_id) else None
        id_token = _next_trace_id.set(int(wanted, 16)) if wanted else None
        try:
            self.run_span = self.tracer.start_span(
                f"run {self.request.pipeline}", context=parent, links=links, kind=trace.SpanKind.CONSUMER,
                attributes={"convergence.run_id": self.request.run_id, "convergence.org_slug": self.request.org_slug,
                            "convergence.pipeline": self.request.pipeline, "convergence.attempt": context.attempt,
                            "convergence.trigger": str(context.trigger), "convergence.trace_id": self.request.trace_id,
                            "messaging.system": "gcp_pubsub"})
        finally:
            if id_token is not None:
                _next_trace_id.reset(id_token)
        # Left attached in the handling task: the step tasks the executor creates next inherit it, and so
        # does the final event the handler publishes after the run-log commit. The task ends with the delivery.
        otel_context.attach(trace.set_span_in_context(self.run_span))
        await self.inner.pipeline_started(config, context)

    async def step_started(self, step: Any, context: Any) -> None:
        span = self.tracer.start_span(f"step {step.step_id}", attributes={
            "convergence.step_id": step.step_id, "convergence.ps_type": step.ps_type})
        # Each step runs in its own task: attaching here makes the step's span current for that task only.
        self._steps[step.step_id] = (span, otel_context.attach(trace.set_span_in_context(span)))
        await self.inner.step_started(step, context)

    async def step_finished(self, result: Any, context: Any) -> None:
        try:
            await self.inner.step_finished(result, context)
        finally:
            span, token = self._steps.pop(result.step_id, (None, None))
            if span is None:  # skipped: it never started, a zero-length span records that it was skipped
                span = self.tracer.start_span(f"step {result.step_id}", attributes={
                    "convergence.step_id": result.step_id, "convergence.ps_type": result.ps_type})
            _close(span, result.status.value, result.error, result.rows_processed)
            if token is not None:
                with contextlib.suppress(ValueError):  # called from another task than step_started
                    otel_context.detach(token)

    async def pipeline_finished(self, result: Any, context: Any) -> None:
        try:
            await self.inner.pipeline_finished(result, context)
        finally:
            if self.run_span is not None:
                _close(self.run_span, result.status.value, result.error, result.rows_processed)


def _close(span: Any, status: str, error: Any, rows: int | None) -> None:
    span.set_attribute("convergence.status", status)
    if rows is not None:
        span.set_attribute("convergence.rows_processed", rows)
    if error is not None:
        code = str(getattr(error.code, "value", error.code))
        span.set_attribute("convergence.error_code", code)
        span.set_status(trace.Status(trace.StatusCode.ERROR, code))
    span.end()


__all__ = [
    "EXPORTERS", "TracingObserver", "caller_context", "configure_tracing", "context_from_attributes",
    "delivery_context", "disable", "enabled", "force_flush", "run_trace", "shutdown",
]
