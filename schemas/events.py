"""Pipeline events: what the consumer publishes as a run progresses, and what followers decode."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from convergence.observability.logging import redact_secrets
from convergence.pipeline.results import ErrorInfo
from convergence.schemas.errors import MessageRejected, RejectCode
from convergence.schemas.registry import PIPELINE_EVENT_V1, check, schema
from convergence.schemas.run_request import SCHEMA_VERSION, RunRequest, compact_json, rfc3339
from convergence.schemas.strict_json import loads_object

MAX_EVENT_BYTES = 256 * 1024
MAX_ERROR_MESSAGE = 2000

_FIELDS = schema(PIPELINE_EVENT_V1)["properties"]
_NULLABLE_IDENTITY = frozenset({"request_rejected", "dead_lettered"})
_STEP_EVENTS = frozenset({"step_started", "step_completed", "step_failed"})
_MASK = "[REDACTED]"  # what observability.logging.redact_secrets writes
_ERROR_EVENTS = frozenset({"step_failed", "request_rejected", "dead_lettered"})
_EVENT_NAMESPACE = uuid.UUID("0b9d7c52-3f0e-5a8e-9b1c-7d2f4e6a8c10")  # fixed forever: ids must not change

Status = Literal["PENDING", "RUNNING", "SUCCESS", "FAILED", "TIMEOUT", "SKIPPED", "REJECTED"]


class EventType(StrEnum):
    PIPELINE_STARTED = "pipeline_started"
    STEP_STARTED = "step_started"
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    PIPELINE_COMPLETED = "pipeline_completed"
    REQUEST_REJECTED = "request_rejected"
    DEAD_LETTERED = "dead_lettered"


class EventError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=_FIELDS["error"]["oneOf"][1]["properties"]["code"]["pattern"])
    message: str
    retryable: bool = False

    @field_validator("message")
    @classmethod
    def _bounded(cls, value: str) -> str:
        # A long stack of provider output must not make the event unpublishable: cut, don't refuse.
        return value if len(value) <= MAX_ERROR_MESSAGE else value[: MAX_ERROR_MESSAGE - 3] + "..."

    @classmethod
    def from_error_info(cls, info: ErrorInfo) -> EventError:
        return cls(code=info.code, message=info.message, retryable=info.retryable)


class PipelineEvent(BaseModel):
    """One event. Secrets never belong here: error messages are redacted by the executor beforehand,
    and details keys that look like secrets are masked on construction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Filled from the event's identity when not given (see event_id_for): a repeat has the same id.
    event_id: str = Field(default="", pattern=_FIELDS["event_id"]["pattern"])  # "" never stays: _deterministic_id
    schema_version: Literal["1"] = SCHEMA_VERSION
    event_type: EventType
    run_id: str | None = Field(pattern=_FIELDS["run_id"]["pattern"])
    org_slug: str | None = Field(pattern=_FIELDS["org_slug"]["pattern"])
    pipeline: str | None = Field(pattern=_FIELDS["pipeline"]["pattern"])
    pipeline_id: str | None = Field(default=None, pattern=_FIELDS["pipeline_id"]["pattern"])
    step_id: str | None = Field(default=None, pattern=_FIELDS["step_id"]["pattern"])
    status: Status | None = None
    attempt: int | None = Field(default=None, ge=1)
    rows_processed: int | None = Field(default=None, ge=0)
    duration_ms: int | None = Field(default=None, ge=0)
    error: EventError | None = None
    trace_id: str | None = Field(default=None, pattern=_FIELDS["trace_id"]["pattern"])
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    details: dict[str, Any] = Field(default_factory=dict, max_length=50)

    @model_validator(mode="before")
    @classmethod
    def _deterministic_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("event_id"):
            data = {**data, "event_id": _event_id_of(data)}
        return data

    @field_validator("details")
    @classmethod
    def _mask_secret_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _redact_nested(value)

    @model_validator(mode="after")
    def _fields_for_type(self) -> Self:
        kind = self.event_type.value
        if kind not in _NULLABLE_IDENTITY:
            missing = [name for name in ("run_id", "org_slug", "pipeline") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"{kind} needs {', '.join(missing)}")
        if kind in _STEP_EVENTS and self.step_id is None:
            raise ValueError(f"{kind} needs step_id")
        if kind in _ERROR_EVENTS and self.error is None:
            raise ValueError(f"{kind} needs error")
        return self

    @classmethod
    def for_request(cls, event_type: EventType | str, request: RunRequest, **fields: Any) -> PipelineEvent:
        """An event about a decoded request: identity and trace id copied from it."""
        identity = {
            "run_id": request.run_id, "org_slug": request.org_slug,
            "pipeline": request.pipeline, "trace_id": request.trace_id,
        }  # fmt: skip
        return cls(event_type=EventType(event_type), **{**identity, **fields})

    def attributes(self) -> dict[str, str]:
        """Attributes for follower filters (e.g. attributes.run_id = "...")."""
        attributes = {"schema_version": self.schema_version, "event_type": self.event_type.value}
        for key in ("run_id", "org_slug", "pipeline", "trace_id"):
            value = getattr(self, key)
            if value:
                attributes[key] = value
        return attributes

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["occurred_at"] = rfc3339(self.occurred_at)
        return data

    def to_json(self) -> bytes:
        return compact_json(self.to_dict())


def event_id_for(event_type: EventType | str, run_id: str | None, *, step_id: str | None = None,
                 attempt: int | None = None, status: str | None = None, error_code: str | None = None) -> str:
    """The id of an event: uuid5 over what makes it one logical event, so every repeat of that event (a
    redelivery, a republish after a crash) carries the same id and readers deduplicate on it.

    - A run's success (pipeline_completed, SUCCESS): run_id only, whatever the attempt. A run succeeds
      once; a redelivery of a run that already succeeded announces that same success again.
    - A rejection (request_rejected): run_id and reason code. Redelivered, it is the same decision.
    - Anything else belongs to one attempt (pipeline_started, step_*, a pipeline_completed that is not a
      success, dead_lettered with its delivery count): run_id, type, step and attempt. A new attempt is a
      new execution whose events must not be mistaken for the last one's (the run log keys its rows by
      run_id and attempt the same way).
    - No run_id: nothing identifies the event, so the id is random.
    """
    kind = EventType(event_type)
    if not run_id:
        return uuid.uuid4().hex
    if kind is EventType.PIPELINE_COMPLETED and status == "SUCCESS":
        key = [run_id, kind.value, "SUCCESS"]
    elif kind is EventType.REQUEST_REJECTED:
        key = [run_id, kind.value, error_code or ""]
    else:
        key = [run_id, kind.value, step_id or "", "" if attempt is None else str(attempt)]
    return uuid.uuid5(_EVENT_NAMESPACE, "\x1f".join(key)).hex


def _event_id_of(data: dict[str, Any]) -> str:
    """event_id_for from an event's raw fields (before validation: enums, models or plain JSON values)."""
    error = data.get("error")
    code = error.get("code") if isinstance(error, dict) else getattr(error, "code", None)
    status = data.get("status")
    event_type: Any = data.get("event_type")  # anything: event_id_for rejects what is not an EventType
    try:
        return event_id_for(
            event_type, data.get("run_id"), step_id=data.get("step_id"), attempt=data.get("attempt"),
            status=getattr(status, "value", status), error_code=getattr(code, "value", code),
        )
    except (TypeError, ValueError):  # not an event at all: the field validators say why
        return uuid.uuid4().hex


def validate_pipeline_event(data: Any) -> PipelineEvent:
    """Full JSON Schema check then the model (tests, followers). Publishers rely on the model alone."""
    check(PIPELINE_EVENT_V1, data)
    try:
        return PipelineEvent.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise MessageRejected(RejectCode.SCHEMA_INVALID, f"{where}: {first['msg']}") from None


def decode_pipeline_event(data: bytes) -> PipelineEvent:
    return validate_pipeline_event(loads_object(data, MAX_EVENT_BYTES, "pipeline event"))


def _redact_nested(value: Any) -> Any:
    """Mask values under secret-looking keys (same rule as the log redaction). Numbers stay: a count under
    a key like "total_tokens" is not a secret, and LLM usage events carry many of those."""
    if isinstance(value, dict):
        candidates = {str(k): v for k, v in value.items() if not _harmless(v)}
        masked = redact_secrets(None, "", dict(candidates))
        return {str(k): _MASK if masked.get(str(k)) == _MASK else _redact_nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_nested(v) for v in value]
    return value


def _harmless(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float)
