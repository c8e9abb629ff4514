"""Executor observers: step-by-step events on the events topic, and the buffered run log."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from convergence.pipeline import RunContext, RunObserver, StepResult, StepStatus
from convergence.pipeline.models import PipelineConfig, StepConfig
from convergence.pipeline.results import PipelineResult
from convergence.schemas import EventType, PipelineEvent, RunRequest
from convergence.schemas.events import EventError

log = structlog.get_logger(__name__)

_EVENTS_TIMEOUT_SECONDS = 30.0


class CompositeObserver(RunObserver):
    """Calls each observer in turn; one failing observer never stops the run or the others."""

    def __init__(self, observers: Sequence[RunObserver]):
        self.observers = list(observers)

    async def _each(self, name: str, *args: Any) -> None:
        for observer in self.observers:
            try:
                await getattr(observer, name)(*args)
            except Exception:  # noqa: BLE001 - reporting problems are logged, the run goes on
                log.exception("observer failed", observer=type(observer).__name__, hook=name)

    async def pipeline_started(self, config, context):
        await self._each("pipeline_started", config, context)

    async def step_started(self, step, context):
        await self._each("step_started", step, context)

    async def step_finished(self, result, context):
        await self._each("step_finished", result, context)

    async def pipeline_finished(self, result, context):
        await self._each("pipeline_finished", result, context)


class EventObserver(RunObserver):
    """Publishes pipeline_started, step_started, step_completed/step_failed and pipeline_completed."""

    def __init__(self, publisher: Any, request: RunRequest, attempt: int):
        self.publisher = publisher
        self.request = request
        self.attempt = attempt
        self._sent: list[Any] = []

    def _publish(self, event_type: EventType, **fields: Any) -> None:
        event = PipelineEvent.for_request(event_type, self.request, attempt=self.attempt, **fields)
        self._sent.append(self.publisher.publish_event(event))

    async def pipeline_started(self, config: PipelineConfig, context: RunContext) -> None:
        self._publish(EventType.PIPELINE_STARTED, pipeline_id=context.pipeline_id, status="RUNNING",
                      details={"steps": [s.step_id for s in config.steps], "trigger": context.trigger})

    async def step_started(self, step: StepConfig, context: RunContext) -> None:
        self._publish(EventType.STEP_STARTED, pipeline_id=context.pipeline_id, step_id=step.step_id,
                      status="RUNNING", details={"ps_type": step.ps_type})

    async def step_finished(self, result: StepResult, context: RunContext) -> None:
        ok = result.status is StepStatus.SUCCESS
        self._publish(
            EventType.STEP_COMPLETED if ok else EventType.STEP_FAILED,
            pipeline_id=context.pipeline_id, step_id=result.step_id, status=result.status.value,
            rows_processed=result.rows_processed, duration_ms=result.duration_ms,
            error=EventError.from_error_info(result.error) if result.error else None,
            details=_scalar_details(result.result),
        )

    async def pipeline_finished(self, result: PipelineResult, context: RunContext) -> None:
        self._publish(
            EventType.PIPELINE_COMPLETED, pipeline_id=result.pipeline_id, status=result.status.value,
            rows_processed=result.rows_processed, duration_ms=result.duration_ms,
            error=EventError.from_error_info(result.error) if result.error else None,
        )
        # This run's events are out before its message is acked (other runs' events are not waited for).
        sent = [asyncio.wrap_future(future) for future in self._sent]
        done, pending = await asyncio.wait(sent, timeout=_EVENTS_TIMEOUT_SECONDS)
        for future in pending:
            future.cancel()
        if pending:
            log.error("events not confirmed in time", pending=len(pending), timeout_s=_EVENTS_TIMEOUT_SECONDS)


class RunLogObserver(RunObserver):
    """Run and step logs in BigQuery. Rows are staged and written by `commit`, a group commit shared by all
    concurrent runs: the start row goes out with the next commit; the final and step rows are committed
    by the handler, which acks only once they are written."""

    def __init__(self, runlog: Any, request: RunRequest, attempt: int, commit: Any):
        self.runlog = runlog
        self.request = request
        self.attempt = attempt
        self.commit = commit

    async def pipeline_started(self, config: PipelineConfig, context: RunContext) -> None:
        self.runlog.run_started(
            run_id=self.request.run_id, org_slug=self.request.org_slug, pipeline=self.request.pipeline,
            pipeline_id=context.pipeline_id, trigger=self.request.trigger.value, attempt=self.attempt,
            parameters=dict(self.request.parameters), trace_id=self.request.trace_id, write=False,
        )
        self.commit.soon()  # visible at once: a run that dies early still leaves its RUNNING row

    async def pipeline_finished(self, result: PipelineResult, context: RunContext) -> None:
        self.runlog.run_finished(
            result, pipeline=self.request.pipeline, trigger=self.request.trigger.value, attempt=self.attempt,
            parameters=dict(self.request.parameters), trace_id=self.request.trace_id, write=False,
        )


def _scalar_details(result: dict[str, Any]) -> dict[str, Any]:
    """Step results go into events only as small scalars (counts, totals), never nested payloads."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, str | int | float | bool) and len(out) < 20:
            out[key] = value if not isinstance(value, str) else value[:200]
    return out
