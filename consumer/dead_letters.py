"""Drain of the dead-letter subscription: a request Pub/Sub gave up on is recorded FAILED with reason
DEAD_LETTERED (and its delivery count), announced with a `dead_lettered` event and a failure
notification, then acked. The run log keeps the original request so `convergence dlq replay` can
republish it after a fix."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from convergence.consumer.handler import UNKNOWN_ORG, Notifier, _looks_like_run_id
from convergence.consumer.outcome import Outcome, OutcomeKind
from convergence.observability import metrics
from convergence.observability.logging import run_context
from convergence.observability.tracing import with_trace_id
from convergence.pipeline.errors import ErrorCode
from convergence.schemas import EventType, MessageRejected, PipelineEvent, decode_run_request
from convergence.schemas.events import EventError

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices

log = structlog.get_logger(__name__)
DELIVERY_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
SOURCE_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"


class DeadLetterHandler:
    def __init__(self, services: PlatformServices, notify: Notifier | None = None):
        self.services = services
        self.notify = notify

    async def handle(self, data: bytes, attributes: Mapping[str, str], message_id: str,
                     delivery_attempt: int | None, *, deadline_seconds: float | None = None,
                     publish_time: datetime | None = None) -> Outcome:
        count = _int(attributes.get(DELIVERY_COUNT))
        try:
            request = decode_run_request(data, {k: v for k, v in attributes.items() if not k.startswith("Cloud")})
            request = with_trace_id(request, attributes)  # same id as the handler's attempts
            run_id, org, pipeline, trace_id = request.run_id, request.org_slug, request.pipeline, request.trace_id
        except MessageRejected:
            request = None
            run_id = attributes.get("run_id", "")
            run_id = run_id if _looks_like_run_id(run_id) else f"msg_{message_id}"
            org = UNKNOWN_ORG  # an org named by an attribute alone is not trusted (as for rejections)
            pipeline, trace_id = None, None
        message = (f"gave up after {count} delivery attempts" if count else "gave up after repeated failures")
        with run_context(run_id=run_id, org_slug=org, trace_id=trace_id):
            metrics.DEAD_LETTERED.inc()
            log.error("run request dead-lettered", delivery_count=count,
                      source=attributes.get(SOURCE_SUBSCRIPTION))
            await asyncio.to_thread(
                self.services.runlog.record_dead_lettered, run_id=run_id, org_slug=org, pipeline=pipeline,
                delivery_count=count, message=message, trace_id=trace_id,
                request_json=data.decode("utf-8", "replace") if request is not None else None,
                parameters=dict(request.parameters) if request is not None else None,
                trigger=request.trigger.value if request is not None else None,
            )
            self.services.events.publish_event(PipelineEvent(
                event_type=EventType.DEAD_LETTERED, run_id=run_id, org_slug=org, pipeline=pipeline,
                trace_id=trace_id, status="FAILED", attempt=count or None,
                error=EventError(code=ErrorCode.DEAD_LETTERED, message=message),
                details={"delivery_count": count or 0},
            ))
            await asyncio.to_thread(self.services.events.flush, 30)
        outcome = Outcome(OutcomeKind.FAILED, run_id, org, code=ErrorCode.DEAD_LETTERED, message=message)
        if self.notify is not None:
            try:
                await self.notify(outcome)
            except Exception:  # noqa: BLE001 - the record is what matters; the notifier is best effort
                log.exception("dead-letter notification failed")
        return outcome


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
