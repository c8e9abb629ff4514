"""Result model: pipeline status, duration, per-step status/duration/error/result."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, TypedDict

from pydantic import BaseModel, Field


class StepStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    SKIPPED = "SKIPPED"


class RunStatus(StrEnum):
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    REJECTED = "REJECTED"


class StepOutput(TypedDict, total=False):
    """What a processor's `execute` returns. The executor takes `status` and `rows_processed` out; every
    other key is the step's result (StepResult.result), readable by later steps as `{step_id.key}`.

    Processors add keys of their own beyond the common ones listed here. mypy treats a TypedDict as closed,
    so it reports such keys: that is why the processors are not in the mypy-checked packages."""

    # SUCCESS (or COMPLETED, OK; any case): the step succeeded. Anything else fails the step with `error`.
    status: str
    rows_processed: int
    error: str
    # The table written (`destination_table` qualified, `table` a name in the org's dataset) and the mode.
    destination_table: str
    table: str
    write_mode: str
    # The run's date window, ISO dates (processors._dates.DateRange.as_result).
    start_date: str
    end_date: str
    pages: int
    batches: int
    provider: str
    query_job_id: str | None


class ErrorInfo(BaseModel):
    code: str
    message: str
    retryable: bool = False


class StepResult(BaseModel):
    step_id: str
    ps_type: str
    status: StepStatus = StepStatus.PENDING
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: int = 0
    rows_processed: int = 0
    error: ErrorInfo | None = None
    result: dict[str, Any] = Field(default_factory=dict)


class PipelineResult(BaseModel):
    pipeline_id: str
    run_id: str
    org_slug: str
    status: RunStatus
    started_at: datetime
    ended_at: datetime
    duration_ms: int
    steps: list[StepResult]
    error: ErrorInfo | None = None

    @property
    def retryable(self) -> bool:
        """True when the failure is transient, so the message should be redelivered."""
        return self.status is RunStatus.FAILED and self.error is not None and self.error.retryable

    @property
    def rows_processed(self) -> int:
        return sum(step.rows_processed for step in self.steps)

    def step(self, step_id: str) -> StepResult:
        return next(s for s in self.steps if s.step_id == step_id)
