"""Errors of the pipeline core, each with a stable code used in run logs, events and the ack policy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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

    code = "CONFIG_INVALID"

    def __init__(self, problems: list[ConfigProblem] | str, file: str | Path | None = None):
        if isinstance(problems, str):
            problems = [ConfigProblem(problems, file=str(file) if file else None)]
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class PipelineNotFound(ConfigError):
    code = "UNKNOWN_PIPELINE"


class InvalidPipelineRef(ConfigError):
    code = "INVALID_PIPELINE_PATH"


class StepError(Exception):
    """Raised by processors to say how a step failed. `retryable` drives ack (False) or nack (True)."""

    code = "STEP_FAILED"
    retryable = False

    def __init__(self, message: str, code: str | None = None, **details: object):
        super().__init__(message)
        if code:
            self.code = code
        self.details = details


class TransientStepError(StepError):
    """Network errors, provider or BigQuery 5xx, 429 after backoff: Pub/Sub redelivers later."""

    code = "TRANSIENT_ERROR"
    retryable = True


class PermanentStepError(StepError):
    """Bad credentials, 4xx from a provider, bad input: the run fails and is not retried."""

    code = "PERMANENT_ERROR"
    retryable = False
