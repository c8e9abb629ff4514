"""The run request: model, builders, and decoding of incoming messages (bytes + attributes)."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from convergence.pipeline.errors import InvalidPipelineRef
from convergence.pipeline.loader import PipelineRef
from convergence.schemas.errors import MessageRejected, RejectCode
from convergence.schemas.registry import RUN_REQUEST_V1, preview, problems, reject, schema
from convergence.schemas.strict_json import loads_object

SCHEMA_VERSION: Final = "1"
MAX_RUN_REQUEST_BYTES = 64 * 1024
# Attribute keys a consumer may rely on (filters, log correlation).
IDENTITY_ATTRIBUTES = ("org_slug", "pipeline", "run_id")

_FIELDS = schema(RUN_REQUEST_V1)["properties"]  # patterns come from the schema file: one source of truth

Scalar = str | int | float | bool | None


class Trigger(StrEnum):
    ADHOC = "adhoc"
    SCHEDULED = "scheduled"
    BACKFILL = "backfill"
    REPLAY = "replay"


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex}"


def deterministic_run_id(*parts: str, prefix: str = "run") -> str:
    """Same parts, same run_id: a duplicated tick or retried publish dedupes downstream."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:32]
    return f"{prefix}_{digest}"


class RunRequest(BaseModel):
    """A validated run request. Build with ``create`` or ``validate_run_request``, which check the schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal["1"] = SCHEMA_VERSION
    run_id: str = Field(pattern=_FIELDS["run_id"]["pattern"])
    org_slug: str = Field(pattern=_FIELDS["org_slug"]["pattern"])
    pipeline: str
    parameters: dict[str, Scalar] = Field(default_factory=dict)
    trigger: Trigger = Trigger.ADHOC
    requested_by: str = Field(min_length=1, max_length=200)
    requested_at: AwareDatetime
    trace_id: str | None = Field(default=None, pattern=_FIELDS["trace_id"]["pattern"])
    # Set by validate_run_request: publishers skip a second JSON Schema pass (~60 us) on a fan-out.
    _schema_checked: bool = PrivateAttr(default=False)

    @classmethod
    def create(
        cls,
        org_slug: str,
        pipeline: str,
        parameters: Mapping[str, Scalar] | None = None,
        trigger: Trigger | str = Trigger.ADHOC,
        requested_by: str = "convergence",
        run_id: str | None = None,
        trace_id: str | None = None,
        requested_at: datetime | None = None,
    ) -> RunRequest:
        """Build and check against the JSON Schema; raises MessageRejected like an incoming message would."""
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id or new_run_id(),
            "org_slug": org_slug,
            "pipeline": pipeline,
            "parameters": dict(parameters or {}),
            "trigger": str(trigger),
            "requested_by": requested_by,
            "requested_at": rfc3339(requested_at or datetime.now(UTC)),
            "trace_id": trace_id,
        }
        return validate_run_request(data)

    @property
    def schema_checked(self) -> bool:
        return self._schema_checked

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copy = super().model_copy(update=update, deep=deep)
        if update:
            copy._schema_checked = False  # updated fields were not validated
        return copy

    @property
    def pipeline_ref(self) -> PipelineRef:
        return PipelineRef.parse(self.pipeline)

    def attributes(self) -> dict[str, str]:
        """Pub/Sub message attributes: identity for filters and log correlation (no parameters)."""
        attributes = {
            "schema_version": self.schema_version,
            "org_slug": self.org_slug,
            "pipeline": self.pipeline,
            "run_id": self.run_id,
        }
        if self.trace_id:
            attributes["trace_id"] = self.trace_id
        return attributes

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["requested_at"] = rfc3339(self.requested_at)
        return data

    def to_json(self) -> bytes:
        return compact_json(self.to_dict())


def validate_run_request(data: Any) -> RunRequest:
    """A decoded JSON value -> RunRequest, or MessageRejected with a specific code and field path."""
    if not isinstance(data, dict):
        raise MessageRejected(RejectCode.SCHEMA_INVALID, "run request must be a JSON object")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise MessageRejected(
            RejectCode.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {preview(version)} is not supported (this consumer knows {SCHEMA_VERSION!r})",
        )
    parameters = data.get("parameters")
    if isinstance(parameters, dict):
        for name, value in parameters.items():
            # JSON has no NaN or Infinity; Python would write them as bare words that no strict parser reads.
            if isinstance(value, float) and not math.isfinite(value):
                raise MessageRejected(RejectCode.SCHEMA_INVALID,
                                      f"parameters.{str(name)[:64]}: {value} is not a finite JSON number")
    found = problems(RUN_REQUEST_V1, data)
    path_problem = _pipeline_problem(data.get("pipeline"))
    if path_problem and all(path[:1] == ("pipeline",) for path, _ in found):
        # The path is the only thing wrong: say so with the parser's explanation.
        raise MessageRejected(RejectCode.INVALID_PIPELINE_PATH, f"pipeline: {path_problem}")
    reject(found)
    try:
        request = RunRequest.model_validate(data)
    except ValidationError as error:  # only reachable if schema and model drift apart
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MessageRejected(RejectCode.SCHEMA_INVALID, f"{where}: {first['msg']}") from None
    request._schema_checked = True
    return request


def decode_run_request(data: bytes, attributes: Mapping[str, str] | None = None) -> RunRequest:
    """Message bytes + attributes -> RunRequest. Attributes must not contradict the body."""
    attributes = attributes or {}
    version = attributes.get("schema_version")
    if version is not None and version != SCHEMA_VERSION:
        raise MessageRejected(
            RejectCode.UNSUPPORTED_SCHEMA_VERSION,
            f"attribute schema_version {preview(version)} is not supported (this consumer knows {SCHEMA_VERSION!r})",
        )
    request = validate_run_request(loads_object(data, MAX_RUN_REQUEST_BYTES, "run request"))
    for key in IDENTITY_ATTRIBUTES:
        given = attributes.get(key)
        if given is not None and given != getattr(request, key):
            raise MessageRejected(
                RejectCode.ATTRIBUTE_MISMATCH,
                f"attribute {key}={preview(given)} contradicts the body's {preview(getattr(request, key))}",
            )
    return request


def _pipeline_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return None  # the schema reports the type
    try:
        PipelineRef.parse(value)
    except InvalidPipelineRef as error:
        return "; ".join(problem.message for problem in error.problems)
    return None


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("requested_at must be timezone-aware")
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def compact_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
