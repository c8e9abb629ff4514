"""Trace ids: where a run's trace id comes from, and how it is checked.

One trace id follows a run from the door that asked for it to every log line, run-log row and event of
the run, so one Cloud Logging filter finds all of it:

    trace="projects/PROJECT/traces/TRACE_ID"     (log lines: observability.logging writes this field)
    jsonPayload.trace_id="TRACE_ID"              (log lines, also the run log's trace_id column)
    attributes.trace_id="TRACE_ID"               (run requests and events on Pub/Sub)

Where it comes from, first match wins (`trace_id_from_headers`):
1. a W3C `traceparent` header (`00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`): its trace-id;
2. Cloud Run's / the Google front end's `X-Cloud-Trace-Context` (`TRACE_ID/SPAN_ID;o=1`): its trace id;
3. an `X-Request-ID`, kept verbatim when it fits the message contract's trace_id pattern (a UUID does);
4. otherwise a new id (`new_trace_id`): 32 lowercase hex, a valid W3C trace-id, so Cloud Trace can link it.

The trace id then travels in the run request's body (`trace_id`) and attributes (`trace_id`); the
consumer reads the body, falling back to the attributes (`trace_id`, or a `traceparent` attribute set by
an OpenTelemetry-instrumented publisher), and finally to an id derived from the run_id, so every attempt
and the dead-letter record of one run agree even when nobody set one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from structlog.contextvars import get_contextvars

# Same pattern as `trace_id` in schemas/run_request.v1.json and pipeline_event.v1.json (a test checks).
TRACE_ID_PATTERN = r"^[A-Za-z0-9_\-.:]{1,128}$"
_TRACE_ID = re.compile(TRACE_ID_PATTERN)
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_TRACEPARENT = re.compile(
    r"^(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})-(?P<flags>[0-9a-f]{2})"
    r"(?P<rest>-.*)?$"
)
_CLOUD_TRACE = re.compile(r"^(?P<trace_id>[0-9a-fA-F]{32})(?:/(?P<span_id>\d+))?(?:;o=(?P<sampled>[01]))?$")
_DERIVED = uuid.UUID("0b7f6c2e-51d4-4c8e-9b0f-1f5a3e6d2c11")

TRACEPARENT = "traceparent"
CLOUD_TRACE_CONTEXT = "x-cloud-trace-context"
REQUEST_ID = "x-request-id"
MAX_HEADER_CHARS = 512


@dataclass(frozen=True)
class TraceParent:
    """A parsed W3C trace context (https://www.w3.org/TR/trace-context/#traceparent-header)."""

    version: str
    trace_id: str
    parent_id: str
    flags: str

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 0x01)


def new_trace_id() -> str:
    """A fresh trace id: 32 lowercase hex (a valid W3C trace-id and Cloud Trace id)."""
    return uuid.uuid4().hex


def derived_trace_id(run_id: str) -> str:
    """A stable trace id for a run that arrived without one (every attempt and the DLQ record agree)."""
    return uuid.uuid5(_DERIVED, run_id).hex


def is_valid_trace_id(value: Any) -> bool:
    """Fits the message contract's trace_id (what run requests, events and the run log accept)."""
    return isinstance(value, str) and bool(_TRACE_ID.fullmatch(value))


def is_w3c_trace_id(value: Any) -> bool:
    """32 lowercase hex, not all zeros."""
    return isinstance(value, str) and bool(_HEX32.fullmatch(value)) and value != "0" * 32


def parse_traceparent(value: str | None) -> TraceParent | None:
    """A W3C traceparent, or None when it is absent or invalid (W3C Trace Context: then start a new trace)."""
    if not value or len(value) > MAX_HEADER_CHARS:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags = (match[name] for name in ("version", "trace_id", "parent_id", "flags"))
    if version == "ff" or (version == "00" and match["rest"]):
        return None  # ff is forbidden; version 00 has exactly four fields (later versions may add more)
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return TraceParent(version, trace_id, parent_id, flags)


def format_traceparent(trace_id: str, parent_id: str | None = None, sampled: bool = True) -> str | None:
    """A version-00 traceparent for an outgoing call; None when `trace_id` is not a W3C trace-id."""
    if not is_w3c_trace_id(trace_id):
        return None
    parent = parent_id if parent_id and re.fullmatch(r"[0-9a-f]{16}", parent_id) and parent_id != "0" * 16 \
        else uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{parent}-{'01' if sampled else '00'}"


def parse_cloud_trace_context(value: str | None) -> str | None:
    """The trace id of an `X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1` header, lowercased."""
    if not value or len(value) > MAX_HEADER_CHARS:
        return None
    match = _CLOUD_TRACE.fullmatch(value.strip())
    if match is None:
        return None
    trace_id = match["trace_id"].lower()
    return trace_id if is_w3c_trace_id(trace_id) else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # plain dicts are case-sensitive; aiohttp's CIMultiDict is not
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == name), None)
    return value if isinstance(value, str) else None


def trace_id_from_headers(headers: Mapping[str, str] | None) -> str | None:
    """traceparent -> X-Cloud-Trace-Context -> X-Request-ID; None when none gives a usable id."""
    if not headers:
        return None
    parent = parse_traceparent(_header(headers, TRACEPARENT))
    if parent is not None:
        return parent.trace_id
    cloud = parse_cloud_trace_context(_header(headers, CLOUD_TRACE_CONTEXT))
    if cloud is not None:
        return cloud
    request_id = (_header(headers, REQUEST_ID) or "").strip()
    return request_id if is_valid_trace_id(request_id) else None


def ensure_trace_id(headers: Mapping[str, str] | None = None) -> str:
    """The incoming request's trace id, or a new one. What an HTTP door binds and publishes."""
    return trace_id_from_headers(headers) or new_trace_id()


def trace_id_from_attributes(attributes: Mapping[str, str] | None) -> str | None:
    """A Pub/Sub message's trace id: the `trace_id` attribute, else a `traceparent` attribute."""
    if not attributes:
        return None
    value = attributes.get("trace_id")
    if is_valid_trace_id(value):
        return value
    for key in (TRACEPARENT, "googclient_traceparent"):  # the latter: OpenTelemetry's Pub/Sub convention
        parent = parse_traceparent(attributes.get(key))
        if parent is not None:
            return parent.trace_id
    return None


def request_trace_id(body_trace_id: str | None, attributes: Mapping[str, str] | None, run_id: str) -> str:
    """The trace id a consumer uses for one run request: body, then attributes, then derived from run_id."""
    if is_valid_trace_id(body_trace_id):
        return body_trace_id  # type: ignore[return-value]
    return trace_id_from_attributes(attributes) or derived_trace_id(run_id)


def with_trace_id(request: Any, attributes: Mapping[str, str] | None = None) -> Any:
    """A RunRequest that certainly has a trace id (the same object when it already has one)."""
    if request.trace_id:
        return request
    return request.model_copy(update={"trace_id": request_trace_id(None, attributes, request.run_id)})


def current_trace_id() -> str | None:
    """The trace id bound to this task/thread by observability.logging.run_context, if any."""
    value = get_contextvars().get("trace_id")
    return value if is_valid_trace_id(value) else None


def cloud_trace(project_id: str, trace_id: str) -> str:
    """Cloud Logging's `trace` field: projects/PROJECT/traces/TRACE_ID."""
    return f"projects/{project_id}/traces/{trace_id}"


__all__ = [
    "TraceParent", "cloud_trace", "current_trace_id", "derived_trace_id", "ensure_trace_id",
    "format_traceparent", "is_valid_trace_id", "is_w3c_trace_id", "new_trace_id", "parse_cloud_trace_context",
    "parse_traceparent", "request_trace_id", "trace_id_from_attributes", "trace_id_from_headers",
    "with_trace_id",
]
