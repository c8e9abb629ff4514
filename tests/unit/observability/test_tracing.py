"""Trace ids: W3C traceparent / X-Cloud-Trace-Context / X-Request-ID parsing, the consumer's fallbacks,
and the Cloud Logging trace field on every line bound with run_context. No emulator needed."""

from __future__ import annotations

import json
import re

import pytest
import structlog

from convergence.observability import logging as obs_logging
from convergence.observability.logging import configure_logging, get_logger, run_context
from convergence.observability.tracing import (
    TRACE_ID_PATTERN,
    cloud_trace,
    current_trace_id,
    derived_trace_id,
    ensure_trace_id,
    format_traceparent,
    is_valid_trace_id,
    is_w3c_trace_id,
    new_trace_id,
    parse_cloud_trace_context,
    parse_traceparent,
    request_trace_id,
    trace_id_from_attributes,
    trace_id_from_headers,
    with_trace_id,
)
from convergence.schemas import RunRequest, decode_run_request
from convergence.schemas.registry import PIPELINE_EVENT_V1, RUN_REQUEST_V1, schema

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


def test_pattern_is_the_message_contracts():
    assert schema(RUN_REQUEST_V1)["properties"]["trace_id"]["pattern"] == TRACE_ID_PATTERN
    assert schema(PIPELINE_EVENT_V1)["properties"]["trace_id"]["pattern"] == TRACE_ID_PATTERN


def test_new_trace_ids_are_w3c_trace_ids():
    ids = {new_trace_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) and is_w3c_trace_id(i) and is_valid_trace_id(i) for i in ids)


def test_traceparent_is_parsed():
    parent = parse_traceparent(TRACEPARENT)
    assert parent is not None
    assert (parent.version, parent.trace_id, parent.parent_id, parent.flags) == ("00", TRACE, PARENT, "01")
    assert parent.sampled
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-00").sampled is False  # type: ignore[union-attr]
    # A later version may append fields: the first four still count.
    assert parse_traceparent(f"01-{TRACE}-{PARENT}-01-whatever").trace_id == TRACE  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [
    None, "", "garbage", f"00-{TRACE}-{PARENT}",                      # missing flags
    f"00-{TRACE.upper()}-{PARENT}-01",                                # uppercase is invalid
    f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01",        # all-zero ids
    f"ff-{TRACE}-{PARENT}-01",                                        # forbidden version
    f"00-{TRACE}-{PARENT}-01-extra",                                  # version 00 has exactly 4 fields
    f"00-{TRACE[:-1]}-{PARENT}-01", "x" * 1000,
])
def test_invalid_traceparents_are_ignored(value):
    assert parse_traceparent(value) is None


def test_cloud_trace_context():
    assert parse_cloud_trace_context(f"{TRACE.upper()}/12345;o=1") == TRACE
    assert parse_cloud_trace_context(TRACE) == TRACE
    assert parse_cloud_trace_context("nothex/1;o=1") is None
    assert parse_cloud_trace_context(None) is None


def test_headers_precedence_traceparent_then_cloud_then_request_id():
    other = "a" * 32
    assert trace_id_from_headers({"traceparent": TRACEPARENT, "X-Cloud-Trace-Context": f"{other}/1",
                                  "X-Request-ID": "req-1"}) == TRACE
    assert trace_id_from_headers({"X-Cloud-Trace-Context": f"{other}/1;o=1", "X-Request-ID": "req-1"}) == other
    uuid_id = "550e8400-e29b-41d4-a716-446655440000"
    assert trace_id_from_headers({"X-Request-ID": uuid_id}) == uuid_id  # verbatim: the caller's filter finds it
    # An invalid traceparent falls through to the next source, as the W3C spec asks.
    assert trace_id_from_headers({"traceparent": "00-broken", "x-request-id": "req-1"}) == "req-1"


def test_headers_lookup_is_case_insensitive_for_plain_dicts():
    assert trace_id_from_headers({"TraceParent": TRACEPARENT}) == TRACE
    assert trace_id_from_headers({"x-REQUEST-id": "abc"}) == "abc"


@pytest.mark.parametrize("request_id", ["has space", "semi;colon", "x" * 129, "ünïcode", ""])
def test_request_ids_outside_the_contract_are_not_used(request_id):
    assert trace_id_from_headers({"X-Request-ID": request_id}) is None
    generated = ensure_trace_id({"X-Request-ID": request_id})
    assert is_w3c_trace_id(generated)


def test_no_headers_gives_a_new_id():
    assert trace_id_from_headers(None) is None and trace_id_from_headers({}) is None
    assert is_w3c_trace_id(ensure_trace_id())


def test_format_traceparent_round_trips():
    header = format_traceparent(TRACE, PARENT)
    assert header == TRACEPARENT
    assert parse_traceparent(format_traceparent(TRACE)).trace_id == TRACE  # type: ignore[union-attr]
    assert format_traceparent("req-1") is None  # not a W3C trace-id: no traceparent is invented


def test_attributes():
    assert trace_id_from_attributes({"trace_id": "abc"}) == "abc"
    assert trace_id_from_attributes({"traceparent": TRACEPARENT}) == TRACE
    assert trace_id_from_attributes({"googclient_traceparent": TRACEPARENT}) == TRACE
    assert trace_id_from_attributes({"trace_id": "bad id"}) is None
    assert trace_id_from_attributes(None) is None


def test_request_trace_id_fallbacks():
    assert request_trace_id("body", {"trace_id": "attr"}, "run_1") == "body"
    assert request_trace_id(None, {"trace_id": "attr"}, "run_1") == "attr"
    assert request_trace_id(None, {}, "run_12345678") == derived_trace_id("run_12345678")
    assert derived_trace_id("run_12345678") == derived_trace_id("run_12345678")  # every attempt agrees
    assert is_w3c_trace_id(derived_trace_id("run_12345678"))


def test_with_trace_id_on_a_decoded_request():
    with_body = RunRequest.create("acme", "testing/consumer/ok", trace_id="from-body")
    assert with_trace_id(with_body, {"traceparent": TRACEPARENT}) is with_body
    bare = RunRequest.create("acme", "testing/consumer/ok", trace_id=None)
    decoded = decode_run_request(bare.to_json(), {**bare.attributes(), "traceparent": TRACEPARENT})
    assert decoded.trace_id is None
    traced = with_trace_id(decoded, {"traceparent": TRACEPARENT})
    assert traced.trace_id == TRACE and traced.run_id == bare.run_id
    assert with_trace_id(decoded, {}).trace_id == derived_trace_id(bare.run_id)


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def msg(self, message: str) -> None:
        self.lines.append(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


def test_every_line_in_run_context_carries_the_cloud_logging_trace_field():
    saved, project = structlog.get_config(), obs_logging._project_id
    sink = _Lines()
    try:
        configure_logging("INFO", "json", project_id="trace-project")
        structlog.configure(logger_factory=lambda *_: sink)
        log = get_logger("test")
        with run_context(run_id="run_1", org_slug="acme", trace_id=TRACE):
            assert current_trace_id() == TRACE
            log.info("one")
            log.warning("two", detail=1)
        log.info("outside")
        assert current_trace_id() is None
    finally:
        structlog.configure(**saved)
        obs_logging._project_id = project
    lines = [json.loads(line) for line in sink.lines]
    assert [line["message"] for line in lines] == ["one", "two", "outside"]
    for line in lines[:2]:
        assert line["trace_id"] == TRACE and line["run_id"] == "run_1"
        assert line["logging.googleapis.com/trace"] == cloud_trace("trace-project", TRACE)
    assert "trace_id" not in lines[2] and "logging.googleapis.com/trace" not in lines[2]
