"""Executor observers: step-by-step events on the events topic, and the buffered run log."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog

from convergence.observability import metrics
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
    """Publishes pipeline_started, step_started and step_completed/step_failed as the run goes, and builds
    its pipeline_completed, which the handler publishes with `publish_final` once the run's final run-log
    row is committed: a reader that sees the final event finds the run's outcome in the run log."""

    def __init__(self, publisher: Any, request: RunRequest, attempt: int):
        self.publisher = publisher
        self.request = request
        self.attempt = attempt
        self._sent: list[Any] = []
        self.final: PipelineEvent | None = None

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
        self.final = final_event(
            self.request, pipeline_id=result.pipeline_id, status=result.status.value, attempt=self.attempt,
            rows_processed=result.rows_processed, duration_ms=result.duration_ms, ended_at=result.ended_at,
            error=EventError.from_error_info(result.error) if result.error else None,
        )
        # The step events are out before the run's rows are committed (other runs' events are not waited for).
        if not await confirmed(self._sent):
            log.error("events not confirmed in time", timeout_s=_EVENTS_TIMEOUT_SECONDS)

    async def publish_final(self) -> bool:
        """Publish pipeline_completed (call after the final run-log row is committed); True once Pub/Sub
        has it. False: the message must come back, and its redelivery publishes the event again."""
        if self.final is None:  # building it failed (logged by the CompositeObserver)
            return False
        with metrics.EVENT_PUBLISH.time():
            return await publish_confirmed(self.publisher, self.final)


def final_event(request: RunRequest, *, pipeline_id: str | None, status: str, attempt: int | None,
                rows_processed: int | None, duration_ms: int | None, ended_at: datetime | None,
                error: EventError | None = None, **identity: Any) -> PipelineEvent:
    """A run's pipeline_completed. It happened when the run ended: a republished copy (a redelivery of a
    run that already succeeded, built from the run log) says the same as the first one, id included."""
    fields: dict[str, Any] = {"occurred_at": ended_at} if ended_at is not None else {}
    fields.update({key: value for key, value in identity.items() if value is not None})
    return PipelineEvent.for_request(
        EventType.PIPELINE_COMPLETED, request, pipeline_id=pipeline_id, status=status, attempt=attempt,
        rows_processed=rows_processed, duration_ms=duration_ms, error=error, **fields)


def success_event_from_record(request: RunRequest, record: Any) -> PipelineEvent:
    """The pipeline_completed of a run the run log shows SUCCESS (a `RunRecord`): the trace and pipeline
    of the attempt that succeeded, whatever the redelivered copy of the request carries."""
    return final_event(request, pipeline_id=record.pipeline_id, status="SUCCESS", attempt=record.attempt,
                       rows_processed=record.rows_processed, duration_ms=record.duration_ms,
                       ended_at=record.end_time, trace_id=record.trace_id, pipeline=record.pipeline)


async def confirmed(sent: Sequence[Any], timeout: float = _EVENTS_TIMEOUT_SECONDS) -> bool:
    """True when every publish future succeeded within `timeout` (the rest are cancelled)."""
    if not sent:
        return True
    waiting = [asyncio.wrap_future(future) for future in sent]
    done, pending = await asyncio.wait(waiting, timeout=timeout)
    for future in pending:
        future.cancel()
    return not pending and all(not f.cancelled() and f.exception() is None for f in done)


async def publish_confirmed(publisher: Any, event: PipelineEvent,
                            timeout: float = _EVENTS_TIMEOUT_SECONDS) -> bool:
    """Publish one event and wait until Pub/Sub has it; False when it could not be published in time."""
    try:
        future = publisher.publish_event(event)
    except Exception:  # noqa: BLE001 - the caller nacks; the redelivery publishes it again
        log.exception("event could not be published", event_type=event.event_type.value)
        return False
    ok = await confirmed([future], timeout)
    if not ok:
        log.error("event not confirmed", event_type=event.event_type.value, event_id=event.event_id)
    return ok


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
