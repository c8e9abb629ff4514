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

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=_FIELDS["event_id"]["pattern"])
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
