"""Streaming-pull subscribers feeding one asyncio loop.

Pub/Sub callback threads never block on a run: the callback hands the message to the loop and
returns; the client's leaser keeps the lease alive until the run acks or nacks it. Scaling out is more
processes on the same subscription.

Lifecycle, top to bottom: `run()` subscribes, waits for a stop signal, then `_drain()`:
stop taking new work (new arrivals and not-started messages are held, unsettled), let running runs
finish within the grace period, cancel what is left, close the stream, then nack everything held.
Nacking only after the stream is closed matters: a message nacked while we still pull comes straight
back to us, and a few such rounds would dead-letter it. Redelivery is safe: writes are idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message
from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

from convergence.consumer.flow import FlowPlan
from convergence.consumer.outcome import Disposition, Outcome, OutcomeKind
from convergence.consumer.slots import OrgBacklogFull, RunSlots
from convergence.observability import metrics

log = structlog.get_logger(__name__)


class MessageHandler(Protocol):
    async def handle(self, data: bytes, attributes: Mapping[str, str], message_id: str,
                     delivery_attempt: int | None, *, deadline_seconds: float | None = None,
                     publish_time: datetime | None = None) -> Outcome: ...


HandOff = Callable[[bytes, Mapping[str, str]], Awaitable[None]]


@dataclass
class PoolStats:
    received: int = 0
    acked: int = 0
    nacked: int = 0
    handed_off: int = 0


class SubscriberPool:
    """One streaming pull on one subscription, with run slots and graceful shutdown."""

    def __init__(self, subscription_path: str, handler: MessageHandler, slots: RunSlots, plan: FlowPlan,
                 hand_off: HandOff | None = None, grace_seconds: float = 25.0,
                 subscriber: pubsub_v1.SubscriberClient | None = None, org_key: str = "org_slug"):
        self.subscription_path = subscription_path
        self.handler = handler
        self.slots = slots
        self.plan = plan
        self.hand_off = hand_off
        self.grace_seconds = grace_seconds
        self.org_key = org_key
        self.stats = PoolStats()
        self._subscriber = subscriber or pubsub_v1.SubscriberClient()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[asyncio.Task[None], Message] = {}
        self._started: set[asyncio.Task[None]] = set()
        self._settled: set[str] = set()
        self._held: list[Message] = []
        self._stopping = asyncio.Event()
        self._accepting = True
        self._stream = None
        self._metric = metrics.subscription_label(subscription_path)
        metrics.track_pool(self)

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> PoolStats:
        self._loop = asyncio.get_running_loop()
        self._stream = self._subscriber.subscribe(
            self.subscription_path,
            callback=self._on_message,
            flow_control=self.plan.flow_control(),
            # The callback only hands off to the loop: two threads are plenty.
            scheduler=ThreadScheduler(ThreadPoolExecutor(max_workers=2, thread_name_prefix="pull-callback")),
        )
        self._stream.add_done_callback(self._on_stream_closed)
        log.info("subscriber started", subscription=self.subscription_path, max_messages=self.plan.max_messages,
                 max_lease_duration=self.plan.max_lease_duration)
        await self._stopping.wait()
        await self._drain()
        return self.stats

    def stop(self) -> None:
        """Ask the pool to drain and stop (signal handlers, tests). Safe from the loop thread."""
        self._stopping.set()

    async def _drain(self) -> None:
        self._accepting = False
        waiting = [task for task in self._tasks if task not in self._started]
        for task in waiting:
            task.cancel()  # not started: nacked in _process
        running = [task for task in self._tasks if task in self._started]
        log.info("draining", running=len(running), not_started=len(waiting), grace_seconds=self.grace_seconds)
        if running:
            _, late = await asyncio.wait(running, timeout=self.grace_seconds)
            for task in late:
                task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._stream is not None:
            self._stream.cancel()
        for message in self._held:  # once, after pulling stopped: they go to another consumer
            self._settle(message, Disposition.NACK)
        self._held.clear()
        if self._stream is not None:
            await asyncio.to_thread(self._stream.result)
        self._subscriber.close()
        log.info("subscriber stopped", **vars(self.stats))

    def _on_stream_closed(self, future) -> None:
        # A fatal stream error (subscription deleted, permission denied) stops the pool instead of hanging.
        if not future.cancelled() and future.exception() is not None and self._loop is not None:
            log.error("streaming pull stopped", error=str(future.exception()))
            self._loop.call_soon_threadsafe(self._stopping.set)

    # -- per message -------------------------------------------------------------------------
    def _on_message(self, message: Message) -> None:
        """Runs on a callback thread: never blocks, never raises."""
        loop = self._loop
        if loop is None or loop.is_closed():
            message.nack()
            return
        loop.call_soon_threadsafe(self._start, message)

    def _start(self, message: Message) -> None:
        self.stats.received += 1
        metrics.message_received(self._metric)
        if not self._accepting:
            self._held.append(message)
            return
        task = asyncio.create_task(self._process(message))
        self._tasks[task] = message
        metrics.OUTSTANDING.labels(self._metric).inc()
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        message = self._tasks.pop(task)
        metrics.OUTSTANDING.labels(self._metric).dec()
        if task.cancelled() and message.message_id not in self._settled:
            # Cancelled before its first step ran: the body never settled it.
            self._held.append(message)
        self._settled.discard(message.message_id)

    async def _process(self, message: Message) -> None:
        task = asyncio.current_task()
        org = message.attributes.get(self.org_key) or "_unknown"
        disposition: Disposition | None = Disposition.NACK
        try:
            async with self.slots.acquire(org):
                self._started.add(task)
                outcome = await self.handler.handle(
                    message.data, dict(message.attributes), message.message_id, message.delivery_attempt,
                    publish_time=message.publish_time,
                )
                disposition = outcome.disposition
                metrics.record_outcome(self._metric, outcome)
        except OrgBacklogFull:
            disposition = await self._hand_off(message)
        except asyncio.CancelledError:
            disposition = None  # draining: held, nacked once the stream is closed
        except Exception as error:  # noqa: BLE001 - the handler should not raise; if it does, retry later
            log.exception("handler raised; nacking", error=str(error))
            disposition = Disposition.NACK
        finally:
            self._started.discard(task)
            if disposition is None:
                self._held.append(message)
            else:
                self._settle(message, disposition)

    async def _hand_off(self, message: Message) -> Disposition:
        if self.hand_off is None:
            return Disposition.NACK
        try:
            await self.hand_off(message.data, dict(message.attributes))
        except Exception as error:  # noqa: BLE001 - keep the original if the copy could not be published
            log.warning("hand-off failed; nacking", error=str(error))
            return Disposition.NACK
        self.stats.handed_off += 1
        metrics.MESSAGES_HANDED_OFF.labels(self._metric).inc()
        return Disposition.ACK

    def _settle(self, message: Message, disposition: Disposition) -> None:
        self._settled.add(message.message_id)
        metrics.message_settled(self._metric, disposition is Disposition.ACK)
        if disposition is Disposition.ACK:
            message.ack()
            self.stats.acked += 1
        else:
            message.nack()
            self.stats.nacked += 1


__all__ = ["HandOff", "MessageHandler", "OutcomeKind", "PoolStats", "SubscriberPool"]
