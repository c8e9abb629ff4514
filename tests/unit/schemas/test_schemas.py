"""Message contracts: the JSON Schema files, the models, and the messages a consumer must refuse."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from convergence import schemas
from convergence.pipeline.results import ErrorInfo, StepStatus
from convergence.schemas import (
    EventError,
    EventType,
    MessageRejected,
    PipelineEvent,
    RejectCode,
    RunRequest,
    decode_pipeline_event,
    decode_run_request,
    validate_pipeline_event,
    validate_run_request,
)


def good_request(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": "1",
        "run_id": "run_0123456789abcdef",
        "org_slug": "acme_corp",
        "pipeline": "gcp/cost/billing",
        "parameters": {"date": "2026-01-31", "limit": 100, "ratio": 0.5, "dry_run": False, "note": None},
        "trigger": "scheduled",
        "requested_by": "scheduler",
        "requested_at": "2026-02-01T02:00:00Z",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    for key, value in changes.items():
        if value is _DROP:
            data.pop(key)
        else:
            data[key] = value
    return data


_DROP = object()
INVALID = RejectCode.SCHEMA_INVALID
VERSION = RejectCode.UNSUPPORTED_SCHEMA_VERSION
PATH = RejectCode.INVALID_PIPELINE_PATH


def rejected(data: Any) -> MessageRejected:
    with pytest.raises(MessageRejected) as caught:
        validate_run_request(data)
    return caught.value


# ---- the files themselves ----


@pytest.mark.parametrize("name", [schemas.RUN_REQUEST_V1, schemas.PIPELINE_EVENT_V1])
def test_schema_files_are_valid_draft_2020_12_package_data(name: str) -> None:
    document = schemas.schema(name)
    Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert document["additionalProperties"] is False


def test_avro_schema_has_the_same_fields_as_the_json_schema() -> None:
    avro = json.loads(schemas.avro_schema_text())
    assert avro["type"] == "record"
    assert [f["name"] for f in avro["fields"]] == list(schemas.schema(schemas.RUN_REQUEST_V1)["properties"])
    trigger = next(f for f in avro["fields"] if f["name"] == "trigger")["type"]
    assert trigger["symbols"] == schemas.schema(schemas.RUN_REQUEST_V1)["properties"]["trigger"]["enum"]


# ---- valid requests ----


def test_valid_request_becomes_a_model_with_attributes() -> None:
    request = validate_run_request(good_request())
    assert request.org_slug == "acme_corp"
    assert request.trigger is schemas.Trigger.SCHEDULED
    assert request.requested_at == datetime(2026, 2, 1, 2, tzinfo=UTC)
    assert request.parameters == good_request()["parameters"]
    assert type(request.parameters["limit"]) is int and type(request.parameters["dry_run"]) is bool
    assert request.attributes() == {
        "schema_version": "1", "org_slug": "acme_corp", "pipeline": "gcp/cost/billing",
        "run_id": "run_0123456789abcdef", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }  # fmt: skip
    assert str(request.pipeline_ref) == "gcp/cost/billing"


@pytest.mark.parametrize(
    "changes",
    [
        {"pipeline": "openai//usage_cost"},  # empty domain
        {"trace_id": _DROP},
        {"trace_id": None},
        {"parameters": {}},
        {"requested_at": "2026-02-01T02:00:00.123456789+05:30"},
        {"run_id": "sched:acme_corp:2026-02-01.daily"},
    ],
)
def test_valid_variants(changes: dict[str, Any]) -> None:
    validate_run_request(good_request(**changes))


def test_create_round_trips_through_bytes_and_attributes() -> None:
    request = RunRequest.create("acme_corp", "openai//usage_cost", {"day": "2026-01-01"}, trigger="backfill")
    assert request.run_id.startswith("run_") and len(request.run_id) == 36
    again = decode_run_request(request.to_json(), request.attributes())
    assert again == request
    assert json.loads(request.to_json())["requested_at"].endswith("Z")


def test_deterministic_run_ids() -> None:
    def make(day: str) -> str:
        return schemas.deterministic_run_id("acme_corp", "gcp/cost/billing", day, prefix="sched")

    first = make("2026-02-01")
    assert first == make("2026-02-01") and first.startswith("sched_")
    assert first != make("2026-02-02")
    validate_run_request(good_request(run_id=first))


# ---- each invalid field: a specific code and a message naming the field ----


@pytest.mark.parametrize(
    ("changes", "code", "expected"),
    [
        ({"run_id": "short"}, INVALID, "run_id: 'short' does not match"),
        ({"run_id": "has space in it"}, INVALID, "run_id:"),
        ({"run_id": 12345678}, INVALID, "run_id: expected string, got integer"),
        ({"run_id": _DROP}, INVALID, "run_id: required field is missing"),
        ({"org_slug": "Acme-Corp"}, INVALID, "org_slug: 'Acme-Corp' does not match"),
        ({"org_slug": "ab"}, INVALID, "org_slug:"),
        ({"pipeline": "gcp/billing"}, PATH, "must be 'provider/domain/pipeline'"),
        ({"pipeline": "GCP/cost/billing"}, PATH, "provider segment 'GCP'"),
        ({"pipeline": "gcp/cost/"}, PATH, "pipeline segment"),
        ({"pipeline": "../../etc/passwd"}, PATH, "pipeline:"),
        ({"pipeline": ["gcp"]}, INVALID, "pipeline: expected string, got array"),
        ({"parameters": []}, INVALID, "parameters: expected object, got array"),
        ({"parameters": {"nested": {"a": 1}}}, INVALID, "parameters.nested: expected string"),
        ({"parameters": {"list": [1]}}, INVALID, "parameters.list: expected string"),
        ({"parameters": {"x": "y" * 1025}}, INVALID, "parameters.x: must be at most 1024"),
        ({"parameters": {f"p{i}": i for i in range(33)}}, INVALID, "at most 32 entries"),
        ({"parameters": {"bad-name": 1}}, INVALID, "parameters: name 'bad-name' must match"),
        ({"parameters": {"org_slug": "other_org"}}, INVALID, "name 'org_slug' is reserved"),
        ({"trigger": "manual"}, INVALID, "trigger: 'manual' is not one of \"adhoc\""),
        ({"requested_by": ""}, INVALID, "requested_by: must be at least 1 characters"),
        ({"requested_by": "eve\r\nX-Injected: 1"}, INVALID, "requested_by:"),
        ({"requested_at": "yesterday"}, INVALID, "requested_at: 'yesterday' is not a valid"),
        ({"requested_at": "2026-02-01T02:00:00"}, INVALID, "requested_at:"),  # no offset
        ({"requested_at": "2026-02-30T02:00:00Z"}, INVALID, "requested_at:"),
        ({"trace_id": "a b"}, INVALID, "trace_id:"),
        ({"schema_version": "2"}, VERSION, "schema_version '2' is not supported"),
        ({"schema_version": 1}, VERSION, "schema_version 1"),
        ({"schema_version": _DROP}, INVALID, "schema_version: required field is missing"),
        ({"priority": "high"}, INVALID, "(body): unknown field(s) 'priority'"),
    ],
)
def test_invalid_field_gives_specific_message(changes: dict[str, Any], code: RejectCode, expected: str):
    error = rejected(good_request(**changes))
    assert error.code is code
    assert expected in error.message, error.message
    assert str(error) == error.message


def test_several_problems_are_all_named_in_field_order() -> None:
    error = rejected(good_request(org_slug="X", trigger="nope", run_id=_DROP))
    assert error.code is RejectCode.SCHEMA_INVALID
    assert error.message.index("org_slug") < error.message.index("run_id") < error.message.index("trigger")
    error = rejected(good_request(run_id=_DROP, org_slug=_DROP))
    assert "(body): required fields are missing: run_id, org_slug" in error.message


def test_the_list_of_problems_is_capped() -> None:
    error = rejected(
        {
            "schema_version": "1",
            **{f"x{i}": i for i in range(3)},
            "run_id": 1,
            "org_slug": 2,
            "pipeline": 3,
            "parameters": 4,
            "trigger": 5,
            "requested_by": 6,
            "requested_at": 7,
        }
    )
    assert error.message.endswith("more)")
    assert error.message.count(";") == 4


def test_a_bad_pipeline_path_among_other_problems_is_schema_invalid() -> None:
    error = rejected(good_request(pipeline="a/b", org_slug="X"))
    assert error.code is RejectCode.SCHEMA_INVALID
    assert "pipeline:" in error.message and "org_slug:" in error.message


def test_messages_never_echo_huge_values() -> None:
    error = rejected(good_request(run_id="r" * 50_000, requested_by="x" * 5000))
    assert len(error.message) < 400
    assert "r" * 100 not in error.message
    error = rejected(good_request(**{"x" * 10_000: 1}))
    assert len(error.message) < 300


def test_parameter_values_are_never_echoed() -> None:
    error = rejected(good_request(parameters={"api_token": "sk-live-" + "s" * 2000}))
    assert "sk-live" not in error.message
    assert "parameters.api_token" in error.message


# ---- bytes that are not a run request ----


@pytest.mark.parametrize(
    ("data", "code", "expected"),
    [
        (b"\xff\xfe{}", RejectCode.MALFORMED_JSON, "not valid UTF-8 (bad byte at offset 0)"),
        (b'{"org_slug": "caf\xe9"}', RejectCode.MALFORMED_JSON, "not valid UTF-8"),
        (b"", RejectCode.MALFORMED_JSON, "is empty"),
        (b"{not json", RejectCode.MALFORMED_JSON, "not valid JSON"),
        (b'{"run_id": "a"} trailing', RejectCode.MALFORMED_JSON, "not valid JSON"),
        (b'{"run_id": "run_12345678", "run_id": "run_87654321"}', RejectCode.MALFORMED_JSON, "duplicate key"),
        (b'{"limit": NaN}', RejectCode.MALFORMED_JSON, "NaN is not valid JSON"),
        (b"[1, 2, 3]", INVALID, "must be a JSON object, got array"),
        (b'"run please"', INVALID, "got string"),
        (b"42", INVALID, "got integer"),
        (b"null", INVALID, "got null"),
        (b"[" * 5_000 + b"]" * 5_000, RejectCode.MALFORMED_JSON, "nested too deeply"),
        (b'{"org_slug": "\\ud800"}', RejectCode.MALFORMED_JSON, "lone UTF-16 surrogate"),
    ],
)
def test_undecodable_bytes(data: bytes, code: RejectCode, expected: str) -> None:
    with pytest.raises(MessageRejected) as caught:
        decode_run_request(data, {})
    assert caught.value.code is code
    assert expected in caught.value.message


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_parameters_are_refused(value: float) -> None:
    with pytest.raises(MessageRejected) as caught:
        RunRequest.create("acme", "openai/cost/usage_cost", {"x": value})
    assert caught.value.code is RejectCode.SCHEMA_INVALID and "not a finite JSON number" in caught.value.message
    # 1e400 is valid JSON text that Python reads as infinity: refused the same way, never re-published
    data = json.dumps(good_request(parameters={"x": 1})).encode().replace(b'"x":1', b'"x":1e400')
    data = data.replace(b'"x": 1', b'"x": 1e400')
    with pytest.raises(MessageRejected) as caught:
        decode_run_request(data, {})
    assert caught.value.code is RejectCode.SCHEMA_INVALID


def test_huge_payload_is_refused_before_parsing() -> None:
    data = json.dumps(good_request(parameters={"blob": "x" * 1000})).encode() + b" " * 70_000
    with pytest.raises(MessageRejected) as caught:
        decode_run_request(data, {})
    assert caught.value.code is RejectCode.PAYLOAD_TOO_LARGE
    assert caught.value.message == f"run request is {len(data)} bytes; the limit is 65536"


def test_attributes_must_agree_with_the_body() -> None:
    body = json.dumps(good_request()).encode()
    decode_run_request(body, {"org_slug": "acme_corp", "run_id": "run_0123456789abcdef", "other": "x"})
    with pytest.raises(MessageRejected) as caught:
        decode_run_request(body, {"org_slug": "evil_corp"})
    assert caught.value.code is RejectCode.ATTRIBUTE_MISMATCH
    assert caught.value.message == "attribute org_slug='evil_corp' contradicts the body's 'acme_corp'"
    with pytest.raises(MessageRejected) as caught:
        decode_run_request(body, {"schema_version": "2"})
    assert caught.value.code is RejectCode.UNSUPPORTED_SCHEMA_VERSION


def test_schema_checked_flag_is_reset_by_updates() -> None:
    request = validate_run_request(good_request())
    assert request.schema_checked and request.model_copy().schema_checked
    assert not request.model_copy(update={"trigger": "replay"}).schema_checked
    assert not RunRequest(**request.model_dump()).schema_checked


def test_create_refuses_like_the_consumer_would() -> None:
    with pytest.raises(MessageRejected) as caught:
        RunRequest.create("Bad Org", "gcp/cost/billing")
    assert caught.value.code is RejectCode.SCHEMA_INVALID and "org_slug" in caught.value.message


def test_requested_at_keeps_its_offset() -> None:
    moment = datetime(2026, 2, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    request = RunRequest.create("acme_corp", "gcp/cost/billing", requested_at=moment)
    assert request.to_dict()["requested_at"] == "2026-02-01T02:00:00+02:00"


# ---- events ----


def _request() -> RunRequest:
    return validate_run_request(good_request())


def _event(kind: EventType) -> PipelineEvent:
    request = _request()
    fields: dict[str, Any] = {"attempt": 1}
    if kind in (EventType.STEP_STARTED, EventType.STEP_COMPLETED, EventType.STEP_FAILED):
        fields["step_id"] = "extract"
    if kind in (EventType.STEP_FAILED, EventType.REQUEST_REJECTED, EventType.DEAD_LETTERED):
        fields["error"] = EventError(code="UPSTREAM_401", message="provider refused the key")
    if kind in (EventType.STEP_COMPLETED, EventType.PIPELINE_COMPLETED):
        fields.update(status="SUCCESS", rows_processed=42, duration_ms=1234, pipeline_id="gcp_billing")
    return PipelineEvent.for_request(kind, request, **fields)


@pytest.mark.parametrize("kind", list(EventType))
def test_every_event_type_the_model_builds_matches_the_schema_file(kind: EventType) -> None:
    event = _event(kind)
    again = decode_pipeline_event(event.to_json())
    assert again == event
    attributes = event.attributes()
    assert attributes["event_type"] == kind.value and attributes["run_id"] == event.run_id


@pytest.mark.parametrize(
    ("kind", "missing", "expected"),
    [
        ("step_completed", "step_id", "step_id"),
        ("step_failed", "error", "error"),
        ("pipeline_started", "run_id", "run_id"),
        ("dead_lettered", "error", "error"),
    ],
)
def test_event_rules_per_type_in_schema_and_model(kind: str, missing: str, expected: str) -> None:
    data = _event(EventType.STEP_FAILED).to_dict() | {"event_type": kind}
    data[missing] = None
    with pytest.raises(MessageRejected) as caught:
        validate_pipeline_event(data)
    assert expected in caught.value.message
    with pytest.raises(ValueError, match=expected):
        PipelineEvent.model_validate(data)


def test_rejected_event_may_lack_identity() -> None:
    event = PipelineEvent(
        event_type=EventType.REQUEST_REJECTED, run_id=None, org_slug=None, pipeline=None, status="REJECTED",
        error=EventError(code=RejectCode.MALFORMED_JSON, message="run request is not valid UTF-8"),
    )  # fmt: skip
    assert decode_pipeline_event(event.to_json()).run_id is None
    assert "run_id" not in event.attributes()


def test_event_error_is_bounded_and_details_secrets_masked() -> None:
    event = PipelineEvent.for_request(
        EventType.STEP_FAILED, _request(), step_id="load", status=StepStatus.FAILED,
        error=EventError.from_error_info(ErrorInfo(code="PROCESSOR_ERROR", message="boom " * 1000)),
        details={"api_key": "sk-123", "nested": {"password": "hunter2", "rows": 3}, "credential_id": "c1",
                 "total_tokens": 1234, "credentials": {"key": "k-1"}},
    )  # fmt: skip
    assert len(event.error.message) == 2000 and event.error.message.endswith("...")
    assert event.details == {
        "api_key": "[REDACTED]", "nested": {"password": "[REDACTED]", "rows": 3}, "credential_id": "c1",
        "total_tokens": 1234, "credentials": "[REDACTED]",
    }  # fmt: skip
    assert b"sk-123" not in event.to_json() and b"hunter2" not in event.to_json()
    validate_pipeline_event(event.to_dict())


def test_event_schema_rejects_unknown_fields_and_bad_values() -> None:
    data = _event(EventType.PIPELINE_COMPLETED).to_dict()
    with pytest.raises(MessageRejected, match="unknown field"):
        validate_pipeline_event(data | {"secret": "x"})
    with pytest.raises(MessageRejected, match="rows_processed: -1 must be >= 0"):
        validate_pipeline_event(data | {"rows_processed": -1})
    with pytest.raises(MessageRejected, match="status: 'DONE' is not one of"):
        validate_pipeline_event(data | {"status": "DONE"})
    with pytest.raises(MessageRejected, match="error.code"):
        validate_pipeline_event(data | {"error": {"code": "has space", "message": "m"}})
