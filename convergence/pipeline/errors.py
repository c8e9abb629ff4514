"""Errors of the pipeline core, each with a stable code used in run logs, events and the ack policy."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class ErrorCode(StrEnum):
    """Every code a step can fail with: run-log rows, events and the ack policy carry these values, so a
    value never changes. Processors and the toolkit name codes only through this catalogue."""

    # config and run parameters
    CONFIG_INVALID = "CONFIG_INVALID"
    INVALID_PARAMETERS = "INVALID_PARAMETERS"
    INVALID_PIPELINE_PATH = "INVALID_PIPELINE_PATH"
    INVALID_IDENTIFIER = "INVALID_IDENTIFIER"
    UNKNOWN_PIPELINE = "UNKNOWN_PIPELINE"
    UNKNOWN_PROCESSOR = "UNKNOWN_PROCESSOR"
    UNKNOWN_PLACEHOLDER = "UNKNOWN_PLACEHOLDER"
    PROCEDURE_NOT_FOUND = "PROCEDURE_NOT_FOUND"
    SEED_INVALID = "SEED_INVALID"
    # the executor
    STEP_FAILED = "STEP_FAILED"
    STEP_TIMEOUT = "STEP_TIMEOUT"
    PIPELINE_TIMEOUT = "PIPELINE_TIMEOUT"
    UPSTREAM_FAILED = "UPSTREAM_FAILED"
    PROCESSOR_ERROR = "PROCESSOR_ERROR"
    TRANSIENT_ERROR = "TRANSIENT_ERROR"
    PERMANENT_ERROR = "PERMANENT_ERROR"
    NETWORK_ERROR = "NETWORK_ERROR"
    DEAD_LETTERED = "DEAD_LETTERED"  # the run log's reason for a run the dead-letter drain gave up on
    # credentials
    CREDENTIAL_NOT_FOUND = "CREDENTIAL_NOT_FOUND"
    CREDENTIAL_INVALID = "CREDENTIAL_INVALID"
    CREDENTIAL_DECRYPT_FAILED = "CREDENTIAL_DECRYPT_FAILED"
    # tenancy (operator commands)
    ORG_ALREADY_EXISTS = "ORG_ALREADY_EXISTS"
    PROVIDER_UNKNOWN = "PROVIDER_UNKNOWN"
    # providers (HTTP)
    PROVIDER_AUTH_FAILED = "PROVIDER_AUTH_FAILED"
    PROVIDER_BAD_RESPONSE = "PROVIDER_BAD_RESPONSE"
    PROVIDER_NETWORK_ERROR = "PROVIDER_NETWORK_ERROR"
    PROVIDER_RATE_LIMITED = "PROVIDER_RATE_LIMITED"
    PROVIDER_REQUEST_REJECTED = "PROVIDER_REQUEST_REJECTED"
    PROVIDER_TOO_MANY_REDIRECTS = "PROVIDER_TOO_MANY_REDIRECTS"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    BLOCKED_ADDRESS = "BLOCKED_ADDRESS"
    TOO_MANY_PAGES = "TOO_MANY_PAGES"
    # the warehouse (BigQuery)
    GOOGLE_API_CONFLICT = "GOOGLE_API_CONFLICT"
    GOOGLE_API_ERROR = "GOOGLE_API_ERROR"
    GOOGLE_API_INVALID_REQUEST = "GOOGLE_API_INVALID_REQUEST"
    GOOGLE_API_NOT_FOUND = "GOOGLE_API_NOT_FOUND"
    GOOGLE_API_PERMISSION_DENIED = "GOOGLE_API_PERMISSION_DENIED"
    GOOGLE_API_RATE_LIMITED = "GOOGLE_API_RATE_LIMITED"
    GOOGLE_API_UNAVAILABLE = "GOOGLE_API_UNAVAILABLE"
    GOOGLE_AUTH_ERROR = "GOOGLE_AUTH_ERROR"
    WAREHOUSE_ERROR = "WAREHOUSE_ERROR"
    TABLE_NOT_FOUND = "TABLE_NOT_FOUND"
    DATASET_NOT_OWNED = "DATASET_NOT_OWNED"
    ORG_MISMATCH = "ORG_MISMATCH"
    INVALID_ROW = "INVALID_ROW"
    ROW_OUTSIDE_RANGE = "ROW_OUTSIDE_RANGE"
    # data checks
    RECONCILIATION_DIFFERENCE = "RECONCILIATION_DIFFERENCE"
    FOCUS_NONCONFORMANT = "FOCUS_NONCONFORMANT"


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a pipeline config: where (file, field path, line) and what."""

    message: str
    path: str = ""
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where += f":{self.line}"
        if self.path:
            where += f" [{self.path}]" if where else f"[{self.path}]"
        return f"{where}: {self.message}" if where else self.message


class ConfigError(Exception):
    """A pipeline config cannot be used. Permanent: retrying never helps."""

    code = ErrorCode.CONFIG_INVALID

    def __init__(self, problems: list[ConfigProblem] | str, file: str | Path | None = None):
        if isinstance(problems, str):
            problems = [ConfigProblem(problems, file=str(file) if file else None)]
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class PipelineNotFound(ConfigError):
    code = ErrorCode.UNKNOWN_PIPELINE


class InvalidPipelineRef(ConfigError):
    code = ErrorCode.INVALID_PIPELINE_PATH


class StepError(Exception):
    """Raised by processors to say how a step failed. `retryable` drives ack (False) or nack (True)."""

    code: str = ErrorCode.STEP_FAILED
    retryable = False

    def __init__(self, message: str, code: str | None = None, **details: object):
        super().__init__(message)
        if code:
            self.code = code
        self.details = details


class TransientStepError(StepError):
    """Network errors, provider or BigQuery 5xx, 429 after backoff: Pub/Sub redelivers later."""

    code = ErrorCode.TRANSIENT_ERROR
    retryable = True


class PermanentStepError(StepError):
    """Bad credentials, 4xx from a provider, bad input: the run fails and is not retried."""

    code = ErrorCode.PERMANENT_ERROR
    retryable = False


def invalid(message: str, code: ErrorCode = ErrorCode.CONFIG_INVALID, **details: object) -> PermanentStepError:
    """The one way a processor refuses bad config (CONFIG_INVALID) or run parameters (INVALID_PARAMETERS)."""
    return PermanentStepError(message, code=code, **details)
