"""One run request, start to finish: decode -> validate -> already done? -> org gate -> load config ->
execute -> run log and events -> an Outcome that the pool or the push endpoint turns into ack/nack.

The BigQuery work of concurrent runs is shared: admission lookups are batched (consumer/admission.py) and
run-log rows go out in group commits; a run's outcome is returned only once its rows are written (if they
cannot be, the message is nacked and comes back).

Shared by streaming pull and push delivery, so both follow exactly the same ack policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from convergence.consumer.admission import AdmissionControl
from convergence.consumer.observers import (
    CompositeObserver,
    EventObserver,
    RunLogObserver,
    publish_confirmed,
    success_event_from_record,
)
from convergence.consumer.outcome import Outcome, OutcomeCode, OutcomeKind
from convergence.notifications.notifier import NotificationObserver
from convergence.observability.logging import run_context
from convergence.observability.metrics import ADMISSION_WAIT, RUNLOG_COMMIT, MetricsObserver
from convergence.observability.otel import TracingObserver
from convergence.observability.tracing import with_trace_id
from convergence.pipeline import ConfigError, Executor, PipelineLoader, ProcessorRegistry, RunContext, RunStatus
from convergence.runtime.batching import GroupCommit
from convergence.schemas import EventType, MessageRejected, PipelineEvent, RunRequest, decode_run_request
from convergence.schemas.errors import UNKNOWN_ORG
from convergence.schemas.events import EventError
from convergence.schemas.signing import verify as verify_signature
from convergence.tenancy.gate import ALREADY_RAN, INVALID_ORG_SLUG, ORG_NOT_FOUND

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices

log = structlog.get_logger(__name__)

# Gate refusals that mean the request names no org that exists: filed under UNKNOWN_ORG, so a future org
# of that name never inherits rows anyone could have written under its name.
_NO_SUCH_ORG = frozenset({INVALID_ORG_SLUG, ORG_NOT_FOUND})

Notifier = Callable[[Outcome], Awaitable[None]]


class RunLogUnavailable(RuntimeError):
    """The run log could not be written: the outcome is not recorded, so the message must come back."""


class RunHandler:
    def __init__(self, *, services: PlatformServices, loader: PipelineLoader, registry: ProcessorRegistry | None = None,
                 notify: Notifier | None = None,
                 hand_off: Callable[[bytes, Mapping[str, str]], Awaitable[None]] | None = None):
        self.services = services
        self.settings = services.settings
        self.loader = loader
        self.registry = registry or ProcessorRegistry(self.settings.processor_packages)
        self.notify = notify
        self.hand_off = hand_off
        self._verify_keys = ([key.get_secret_value().encode() for key in self.settings.request_signing_keys]
                             if self.settings.require_signed_requests else None)
        self._inflight: dict[str, asyncio.Future[Outcome]] = {}
        # Concurrent runs share BigQuery calls: admission lookups, and one run-log insert per commit.
        self.admission = AdmissionControl.from_settings(services)
        # Two commits may overlap (RunLog.flush writes a snapshot): a run never waits for a slow one to end.
        self.commit_runlog = GroupCommit(self._flush_runlog, max_delay=self.settings.batch_delay_ms / 1000,
                                         max_in_flight=2, name="runlog-commit")

    async def _flush_runlog(self) -> None:
        with RUNLOG_COMMIT.time():
            flushed = await asyncio.to_thread(self.services.runlog.flush)
        if not flushed:
            # The rows stay buffered for the next commit; the runs waiting on this one are nacked.
            raise RunLogUnavailable("run log rows could not be written to BigQuery")

    async def aclose(self) -> None:
        """Counters and run-log rows still in memory go out (at shutdown; services.close() retries them)."""
        await self.admission.aclose()
        await self.commit_runlog.drain()

    async def handle(self, data: bytes, attributes: Mapping[str, str], message_id: str,
                     delivery_attempt: int | None, *, deadline_seconds: float | None = None,
                     publish_time: datetime | None = None) -> Outcome:
        attempt = delivery_attempt or 1
        try:
            if self._verify_keys is not None:
                verify_signature(data, attributes, self._verify_keys)
            request = decode_run_request(data, attributes)
        except MessageRejected as error:
            try:
                return await self._reject_undecodable(attributes, message_id, attempt, error)
            except RunLogUnavailable as unavailable:  # the rejection is not recorded yet: it must come back
                return Outcome(OutcomeKind.RETRY, f"msg_{message_id}", UNKNOWN_ORG,
                               code=OutcomeCode.INFRASTRUCTURE_ERROR, message=str(unavailable))
        request = with_trace_id(request, attributes)  # body, else attributes, else derived from run_id
        with run_context(run_id=request.run_id, org_slug=request.org_slug, trace_id=request.trace_id,
                         pipeline=request.pipeline, attempt=attempt):
            running = self._inflight.get(request.run_id)
            if running is not None:
                # Same run_id already running in this process: never run it twice in parallel.
                first = await asyncio.shield(running)
                log.info("duplicate delivery of a running run", first_outcome=first.kind.value)
                if first.kind is OutcomeKind.RETRY:
                    return first
                return Outcome(OutcomeKind.DUPLICATE, request.run_id, request.org_slug, code=OutcomeCode.DUPLICATE_RUN)
            future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            self._inflight[request.run_id] = future
            try:
                outcome = await self._handle_request(request, data, attributes, attempt, deadline_seconds)
            except Exception as error:  # noqa: BLE001 - infrastructure trouble: retry later, never lose it
                log.exception("run request failed before the run finished; nacking")
                outcome = Outcome(OutcomeKind.RETRY, request.run_id, request.org_slug,
                                  code=OutcomeCode.INFRASTRUCTURE_ERROR, message=f"{type(error).__name__}: {error}")
            finally:
                self._inflight.pop(request.run_id, None)
            future.set_result(outcome)
            log.info("run request handled", outcome=outcome.kind.value, code=outcome.code)
            return outcome

    async def _handle_request(self, request: RunRequest, data: bytes, attributes: Mapping[str, str],
                              attempt: int, deadline_seconds: float | None) -> Outcome:
        with ADMISSION_WAIT.time():
            admission = await self.admission.admit(request.run_id, request.org_slug, request.pipeline)
        if admission.already_succeeded:
            return await self._already_succeeded(request)
        decision = admission.decision
        assert decision is not None
        if not decision.allowed:
            return await self._reject(request, attempt, decision.code, decision.message)

        try:
            config = self.loader.load(request.pipeline)
        except ConfigError as error:
            return await self._reject(request, attempt, error.code, str(error))
        once = config.execution
        if once.run_once:
            check = await self.admission.check_once(
                request.org_slug, request.pipeline, request.run_id, timeout_seconds=config.timeout_seconds + 60,
                forced=once.forced(request.parameters))
            if check.refused:
                return await self._reject(request, attempt, ALREADY_RAN, check.message)

        if deadline_seconds is not None and config.timeout_seconds > deadline_seconds and self.hand_off:
            # Push must answer within the ack deadline: long pipelines go to the pull topic, same run_id.
            await self.hand_off(data, attributes)
            return Outcome(OutcomeKind.HANDED_OFF, request.run_id, request.org_slug,
                           code=OutcomeCode.HANDED_OFF_TO_PULL)

        if attempt == 1:
            self.admission.count_run(request.org_slug, request.run_id)
        context = RunContext(
            org_slug=request.org_slug, run_id=request.run_id, pipeline_id=config.run_pipeline_id(request.org_slug),
            parameters=dict(request.parameters), trigger=request.trigger, attempt=attempt,
            trace_id=request.trace_id, services=self.services,
        )
        events = EventObserver(self.services.events, request, attempt)
        observer = TracingObserver.wrap(CompositeObserver([
            RunLogObserver(self.services.runlog, request, attempt, self.commit_runlog), events,
            MetricsObserver(request.pipeline), NotificationObserver(self.services, self.registry),
        ]), request, attributes)  # tracing off: the composite itself
        executor = Executor(self.registry, observer=observer, classifiers=self.services.error_classifiers)
        result = await executor.run(config, context)
        if once.run_once:
            self.admission.once_done(request.org_slug, request.pipeline, request.run_id,
                                     result.status is RunStatus.SUCCESS)
        await self.commit_runlog()  # raises when the rows could not be written: the message is nacked
        # Only now the final event: whoever sees it finds the outcome in the run log. Not confirmed: the
        # message comes back (a success is then ALREADY_SUCCEEDED and publishes the same event again).
        if not await events.publish_final() and not result.retryable:
            return self._events_unavailable(request.run_id, request.org_slug)
        if result.status is RunStatus.SUCCESS:
            return Outcome(OutcomeKind.SUCCEEDED, request.run_id, request.org_slug)
        failure = result.error
        code = failure.code if failure else OutcomeCode.UNKNOWN
        message = failure.message if failure else ""
        if result.retryable:
            return Outcome(OutcomeKind.RETRY, request.run_id, request.org_slug, code=code, message=message)
        kind = OutcomeKind.TIMED_OUT if result.status is RunStatus.TIMEOUT else OutcomeKind.FAILED
        outcome = Outcome(kind, request.run_id, request.org_slug, code=code, message=message, details={
            "pipeline": request.pipeline, "pipeline_id": context.pipeline_id, "trigger": request.trigger.value,
            "attempt": attempt})
        await self._notify(outcome)
        return outcome

    async def _already_succeeded(self, request: RunRequest) -> Outcome:
        """A redelivery of a run that already succeeded: its final event again (same event_id), in case the
        process that ran it died between the commit and the publish."""
        record = await asyncio.to_thread(self.services.runlog.latest_run, request.run_id, request.org_slug)
        if record is None or record.status != "SUCCESS":  # admission saw the success row: not expected
            log.warning("already succeeded, but the run log shows no success row", status=getattr(
                record, "status", None))
        elif not await publish_confirmed(self.services.events, success_event_from_record(request, record)):
            return self._events_unavailable(request.run_id, request.org_slug)
        return Outcome(OutcomeKind.DUPLICATE, request.run_id, request.org_slug, code=OutcomeCode.ALREADY_SUCCEEDED)

    async def _reject(self, request: RunRequest, attempt: int, code: str, message: str) -> Outcome:
        log.warning("run request rejected", code=code, reason=message)
        org = UNKNOWN_ORG if code in _NO_SUCH_ORG else request.org_slug
        self.services.runlog.record_rejected(
            run_id=request.run_id, org_slug=org, pipeline=request.pipeline, trigger=request.trigger,
            attempt=attempt, code=code, message=message, parameters=dict(request.parameters),
            trace_id=request.trace_id, write=False,
        )
        await self.commit_runlog()
        event = PipelineEvent.for_request(EventType.REQUEST_REJECTED, request, org_slug=org, attempt=attempt,
                                          status="REJECTED", error=EventError(code=code, message=message))
        if not await publish_confirmed(self.services.events, event):
            return self._events_unavailable(request.run_id, org)
        return Outcome(OutcomeKind.REJECTED, request.run_id, org, code=code, message=message)

    async def _reject_undecodable(self, attributes: Mapping[str, str], message_id: str, attempt: int,
                                  error: MessageRejected) -> Outcome:
        # The body cannot be read, or contradicts its attributes (ATTRIBUTE_MISMATCH): an org is named by an
        # attribute at most, and an attribute alone is trusted with no org's history. The run_id only
        # names the message.
        org = UNKNOWN_ORG
        claimed = attributes.get("org_slug", "")
        run_id = attributes.get("run_id", "")
        run_id = run_id if _looks_like_run_id(run_id) else f"msg_{message_id}"
        with run_context(run_id=run_id, org_slug=org, message_id=message_id):
            log.warning("malformed run request rejected", code=error.code, reason=str(error),
                        claimed_org=claimed[:60] if _looks_like_slug(claimed) else None)
            self.services.runlog.record_rejected(
                run_id=run_id, org_slug=org, pipeline=None, trigger=None, attempt=attempt, code=error.code,
                message=str(error), parameters=None, trace_id=None, write=False,
            )
            await self.commit_runlog()
            event = PipelineEvent(
                event_type=EventType.REQUEST_REJECTED, run_id=run_id, org_slug=org, pipeline=None,
                attempt=attempt, status="REJECTED", error=EventError(code=error.code, message=str(error)))
            if not await publish_confirmed(self.services.events, event):
                return self._events_unavailable(run_id, org)
        return Outcome(OutcomeKind.REJECTED, run_id, org, code=error.code, message=str(error))

    @staticmethod
    def _events_unavailable(run_id: str, org: str) -> Outcome:
        """The outcome is recorded but its event is not out: nacked, the redelivery publishes it (same id)."""
        return Outcome(OutcomeKind.RETRY, run_id, org, code=OutcomeCode.EVENTS_UNAVAILABLE,
                       message="the final event could not be published; the message comes back")

    async def _notify(self, outcome: Outcome) -> None:
        if self.notify is None:
            return
        try:
            await self.notify(outcome)
        except Exception:  # noqa: BLE001 - a broken notifier must not change the ack decision
            log.exception("failure notification failed")


def _looks_like_slug(value: str) -> bool:
    return 3 <= len(value) <= 50 and all(c.isdigit() or c == "_" or "a" <= c <= "z" for c in value)


def _looks_like_run_id(value: str) -> bool:
    return 8 <= len(value) <= 128 and all(c.isalnum() or c in "_-:." for c in value)
