"""Streaming-pull subscribers feeding one asyncio loop.

Pub/Sub callback threads never block on a run: the callback hands the message to the loop and
returns; the client's leaser keeps the lease alive until the run acks or nacks it. Scaling out is more
processes on the same subscription.

Each delivery is one `Delivery` record whose state only moves forward:

    received -> waiting (for a run slot) -> running -> settled (acked or nacked)
         \\___________\\____________________\\-> held (not settled; nacked once pulling has stopped)

The pool itself is running -> draining -> closed. `stop()` (SIGTERM) drains: the stream is cancelled at
once, so pulling stops; deliveries that have not started are held; running runs get `grace_seconds`,
then are cancelled and held. The client shuts its stream down in a fixed order: stop pulling, shut the
scheduler down, stop the leaser, stop the sender thread. Our scheduler's shutdown (`_ClosingScheduler`)
waits for the drain and nacks every held delivery there: pulling has stopped, so a nack cannot come
straight back to us (a few such rounds would dead-letter it), and the sender is still running, so the
nack is not lost (one sent after the sender stops is dropped). Meanwhile the leaser keeps the running
runs' leases. Redelivery is safe: writes are idempotent.

A stream that ends while the pool is running (subscription deleted, permission denied, ...) is lost:
the pool cancels and nacks its deliveries, and `lost` tells the service to stop the process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

import structlog
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message
from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

from convergence.consumer.flow import FlowPlan
from convergence.consumer.outcome import Disposition, Outcome, OutcomeKind
from convergence.consumer.slots import OrgBacklogFull, RunSlots, hand_off_count
from convergence.observability import metrics, otel
from convergence.runtime.threads import in_daemon_thread

log = structlog.get_logger(__name__)

# A run is handed off at most once: republished to the overflow topic, whose subscription (a pool built with
# max_hand_offs=0) waits for the org's slot by the lease. Each republish is a paid publish; the waiting
# copies hold the overflow subscription's flow control, never the requests one, so another org's runs keep
# being delivered during a flood.
MAX_HAND_OFFS = 1
# After the runs are done, how long the client may take to stop its leaser and sender (an RPC under way).
STREAM_CLOSE_SECONDS = 2.0
# How often the pool checks that Pub/Sub answers (a quiet subscription delivers nothing for hours).
PROBE_SECONDS = 15.0
# Errors meaning Pub/Sub did not answer; any other answer (even PermissionDenied) means it is reachable.
_UNREACHABLE = (api_exceptions.ServiceUnavailable, api_exceptions.DeadlineExceeded, api_exceptions.RetryError,
                TimeoutError, OSError)


class MessageHandler(Protocol):
    async def handle(self, data: bytes, attributes: Mapping[str, str], message_id: str,
                     delivery_attempt: int | None, *, deadline_seconds: float | None = None,
                     publish_time: datetime | None = None) -> Outcome: ...


HandOff = Callable[[bytes, Mapping[str, str]], Awaitable[None]]


class DeliveryState(StrEnum):
    RECEIVED = "received"  # on the loop, its task not yet stepped
    WAITING = "waiting"  # waiting for a run slot (leased meanwhile)
    RUNNING = "running"
    SETTLED = "settled"  # acked or nacked: done with
    HELD = "held"  # not settled; nacked once pulling has stopped


class PoolState(StrEnum):
    RUNNING = "running"
    DRAINING = "draining"
    CLOSED = "closed"


class StreamState(StrEnum):
    STARTING = "starting"
    OPEN = "open"
    CLOSED = "closed"  # cancelled by us (shutdown)
    LOST = "lost"  # ended by itself: the process must restart


@dataclass(eq=False)  # identity: a redelivery of the same message id is another delivery
class Delivery:
    message: Message
    state: DeliveryState = DeliveryState.RECEIVED
    task: asyncio.Task[None] | None = None


@dataclass
class PoolStats:
    received: int = 0
    acked: int = 0
    nacked: int = 0
    handed_off: int = 0


class _ClosingScheduler(ThreadScheduler):
    """The client calls shutdown() after it stopped pulling and before it stops its sender thread: the
    moment to nack what the pool holds."""

    def __init__(self, pool: SubscriberPool, executor: ThreadPoolExecutor):
        super().__init__(executor)
        self._pool = pool

    def shutdown(self, await_msg_callbacks: bool = False) -> list[Message]:
        # Our callbacks never block: waiting for them means every message they saw is on the loop's queue.
        dropped = super().shutdown(await_msg_callbacks=True)
        self._pool._settle_before_sender_stops()  # noqa: SLF001 - the pool's own hook
        return dropped  # never handed to us: the client nacks them


class SubscriberPool:
    """One streaming pull on one subscription, with run slots and graceful shutdown."""

    def __init__(self, subscription_path: str, handler: MessageHandler, slots: RunSlots, plan: FlowPlan,
                 hand_off: HandOff | None = None, grace_seconds: float = 6.0,
                 subscriber: pubsub_v1.SubscriberClient | None = None, org_key: str = "org_slug",
                 max_hand_offs: int = MAX_HAND_OFFS, probe_seconds: float = PROBE_SECONDS):
        self.subscription_path = subscription_path
        self.handler = handler
        self.slots = slots
        self.plan = plan
        self.hand_off = hand_off
        self.grace_seconds = grace_seconds
        self.org_key = org_key
        self.max_hand_offs = max_hand_offs
        self.probe_seconds = probe_seconds
        self.stats = PoolStats()
        self.state = PoolState.RUNNING
        self.stream_state = StreamState.STARTING
        self.lost_reason: str | None = None
        self.reachable: bool | None = None  # last probe: None before the first one
        self.last_pull: float | None = None  # monotonic time Pub/Sub last delivered or answered
        self._subscriber = subscriber or pubsub_v1.SubscriberClient()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deliveries: set[Delivery] = set()
        self._stop_requested = asyncio.Event()
        self._runs_done = asyncio.Event()  # drain: every task has finished (settled or held)
        self._cancelling = False  # we cancelled the stream (else its end is a loss)
        self._stream: Any = None
        self._pull_thread: threading.Thread | None = None
        self._metric = metrics.subscription_label(subscription_path)
        metrics.track_pool(self)

    # -- views -------------------------------------------------------------------------------
    @property
    def lost(self) -> bool:
        return self.stream_state is StreamState.LOST

    def deliveries(self, state: DeliveryState | None = None) -> list[Delivery]:
        return [d for d in self._deliveries if state is None or d.state is state]

    def health(self) -> dict[str, Any]:
        """For /health and /ready. `ok` (live): the stream is not lost and Pub/Sub answered the last probe;
        `ready`: also still pulling (not draining)."""
        age = None if self.last_pull is None else round(time.monotonic() - self.last_pull, 1)
        stale = age is not None and age > 3 * self.probe_seconds
        ok = not self.lost and self.reachable is not False and not stale
        ready = ok and self.state is PoolState.RUNNING and self.stream_state is StreamState.OPEN
        return {"subscription": self._metric, "ok": ok, "ready": ready, "state": self.state.value,
                "stream": self.stream_state.value, "last_pull_age_seconds": age, "reachable": self.reachable}

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> PoolStats:
        self._loop = asyncio.get_running_loop()
        self._stream = self._subscriber.subscribe(
            self.subscription_path,
            callback=self._on_message,
            flow_control=self.plan.flow_control(),
            # The callback only hands off to the loop: two threads are plenty.
            scheduler=_ClosingScheduler(self, ThreadPoolExecutor(max_workers=2, thread_name_prefix="pull-callback")),
        )
        self._pull_thread = _pull_thread(self._stream)
        if self.stream_state is StreamState.STARTING:
            self.stream_state = StreamState.OPEN
            self.last_pull = time.monotonic()
        self._stream.add_done_callback(self._on_stream_closed)
        log.info("subscriber started", subscription=self.subscription_path, max_messages=self.plan.max_messages,
                 max_lease_duration=self.plan.max_lease_duration)
        probe = asyncio.create_task(self._probe_forever(), name=f"probe {self._metric}")
        try:
            await self._stop_requested.wait()
        finally:
            probe.cancel()
        await self._drain()
        return self.stats

    def stop(self) -> None:
        """Ask the pool to drain and stop (signal handlers, tests). Safe from the loop thread."""
        if self.state is PoolState.RUNNING:
            self.state = PoolState.DRAINING
        self._stop_requested.set()

    async def _drain(self) -> None:
        self.state = PoolState.DRAINING
        not_started = [d for d in self._deliveries if d.state in (DeliveryState.RECEIVED, DeliveryState.WAITING)]
        for delivery in not_started:
            if delivery.task is not None:
                delivery.task.cancel()  # held, nacked when the stream shuts down
        running = [d.task for d in self._deliveries if d.state is DeliveryState.RUNNING and d.task is not None]
        log.info("draining", subscription=self._metric, running=len(running), not_started=len(not_started),
                 grace_seconds=self.grace_seconds)
        self._cancel_stream()  # pulling stops now; the client then waits in _ClosingScheduler for the drain
        if running:
            _, late = await asyncio.wait(running, timeout=self.grace_seconds)
            for task in late:
                task.cancel()
            if late:
                log.warning("runs cancelled after the grace period; nacking", count=len(late),
                            grace_seconds=self.grace_seconds)
        await self._finish_tasks()
        self._runs_done.set()
        closed = self._stream is None or await asyncio.to_thread(self._wait_for_stream)
        if closed and self._pull_thread is not None:
            # With Pub/Sub unreachable, the client's pulling thread may still be reopening the stream after
            # the client called it stopped; the channel closed under it would only log tracebacks.
            await asyncio.to_thread(self._pull_thread.join, STREAM_CLOSE_SECONDS)
            closed = not self._pull_thread.is_alive()
        # Unreachable: gRPC may still be retrying a call on the channel (the stream's reopening).
        closed = closed and self.reachable is not False
        held = self.deliveries(DeliveryState.HELD)
        if held:  # the stream shut down without our hook (or it gave up waiting): best effort
            log.warning("nacking held messages after the stream closed", count=len(held))
            self._nack_held()
        if closed:
            self._subscriber.close()
        else:  # its threads may still send: closing the channel under them would only add tracebacks
            log.warning("streaming pull did not shut down in time or Pub/Sub is unreachable; leaving it to the exit",
                        subscription=self._metric, seconds=STREAM_CLOSE_SECONDS)
        self.state = PoolState.CLOSED
        log.info("subscriber stopped", subscription=self._metric, **vars(self.stats))

    def _cancel_stream(self) -> None:
        if self._stream is not None and not self._cancelling and not self._stream.done():
            self._cancelling = True
            self._stream.cancel()

    def _wait_for_stream(self) -> bool:
        try:
            self._stream.result(timeout=STREAM_CLOSE_SECONDS)
        except TimeoutError:
            return False
        except Exception:  # noqa: BLE001, S110 - a lost stream's error is reported by _stream_closed
            pass
        return True

    async def _finish_tasks(self) -> None:
        tasks = [d.task for d in self._deliveries if d.task is not None and not d.task.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _settle_before_sender_stops(self) -> None:
        """On the client's shutdown thread, pulling stopped, sender still up: wait until the loop has
        drained the pool (a lost stream: cancelled its deliveries), with every held delivery nacked."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        lost = not self._cancelling
        future = asyncio.run_coroutine_threadsafe(self._settle_at_close(lost), loop)
        try:
            future.result(timeout=self.grace_seconds + 5)
        except Exception as error:  # noqa: BLE001 - never block the client's shutdown for ever
            log.error("held messages not nacked before the stream closed", error=type(error).__name__)

    async def _settle_at_close(self, lost: bool) -> None:
        if lost:
            # No ack can follow: cancel everything now, the messages come back to another consumer.
            self.state = PoolState.DRAINING
            for delivery in list(self._deliveries):
                if delivery.task is not None:
                    delivery.task.cancel()
            await self._finish_tasks()
        else:
            await self._runs_done.wait()
        self._nack_held()

    def _on_stream_closed(self, future: Any) -> None:
        # On the client's shutdown thread, once its sender has stopped.
        error = None if future.cancelled() else future.exception()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stream_closed, error)

    def _stream_closed(self, error: BaseException | None) -> None:
        if self.stream_state is StreamState.LOST:  # already reported (the probe found no subscription)
            return
        if self._cancelling:
            self.stream_state = StreamState.CLOSED
            return
        self.stream_state = StreamState.LOST
        reason = "the stream ended without an error" if error is None else _describe(error)
        self.lost_reason = reason
        log.error("streaming pull ended; stopping the process so it is restarted",
                  subscription=self.subscription_path, reason=reason)
        self.stop()

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.probe_seconds)
            await self.probe()

    async def probe(self) -> bool:
        """One reachability check of Pub/Sub (a subscription read). NotFound: the subscription is gone,
        which ends the pool like a lost stream."""
        try:
            # One attempt (the client would retry for a minute): the next probe is the retry.
            await in_daemon_thread(self._subscriber.get_subscription, name="pubsub-probe",
                                   request={"subscription": self.subscription_path}, retry=None, timeout=10)
        except _UNREACHABLE as error:
            if self.reachable is not False:
                log.error("Pub/Sub unreachable", subscription=self.subscription_path, error=_describe(error))
            self.reachable = False
            return False
        except api_exceptions.NotFound as error:
            self._mark_reached()
            if self.state is PoolState.RUNNING and not self._cancelling:
                self.stream_state = StreamState.LOST
                self.lost_reason = _describe(error)
                log.error("subscription not found; stopping the process so it is restarted",
                          subscription=self.subscription_path, reason=self.lost_reason)
                self.stop()
            return True
        except api_exceptions.GoogleAPICallError:
            pass  # answered (e.g. no permission to read the subscription): reachable
        except Exception as error:  # noqa: BLE001 - anything else (closed channel, ...): not known to answer
            if self.reachable is not False:
                log.error("Pub/Sub unreachable", subscription=self.subscription_path, error=_describe(error))
            self.reachable = False
            return False
        self._mark_reached()
        return True

    def _mark_reached(self) -> None:
        if self.reachable is False:
            log.info("Pub/Sub reachable again", subscription=self.subscription_path)
        self.reachable = True
        self.last_pull = time.monotonic()

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
        self.last_pull = time.monotonic()
        metrics.message_received(self._metric)
        delivery = Delivery(message)
        self._deliveries.add(delivery)
        if self.state is not PoolState.RUNNING:
            delivery.state = DeliveryState.HELD
            if self._runs_done.is_set():  # arrived after the held ones went out
                self._nack_held()
            return
        # Tracing on: the task runs with the client's subscribe span current (the run span's parent).
        delivery.task = asyncio.create_task(self._process(delivery), context=otel.delivery_context(message))
        metrics.OUTSTANDING.labels(self._metric).inc()
        delivery.task.add_done_callback(lambda _task: self._finished(delivery))

    def _finished(self, delivery: Delivery) -> None:
        metrics.OUTSTANDING.labels(self._metric).dec()
        if delivery.state is DeliveryState.RECEIVED:  # cancelled before its first step ran
            delivery.state = DeliveryState.HELD

    async def _process(self, delivery: Delivery) -> None:
        message = delivery.message
        delivery.state = DeliveryState.WAITING
        org = message.attributes.get(self.org_key) or "_unknown"
        may_hand_off = hand_off_count(message.attributes) < self.max_hand_offs
        disposition: Disposition | None = Disposition.NACK
        try:
            waiting_since = time.perf_counter()
            async with self.slots.acquire(org, may_hand_off=may_hand_off):
                metrics.SLOT_WAIT.observe(time.perf_counter() - waiting_since)
                delivery.state = DeliveryState.RUNNING
                outcome = await self.handler.handle(
                    message.data, dict(message.attributes), message.message_id, message.delivery_attempt,
                    publish_time=message.publish_time,
                )
                disposition = outcome.disposition
                metrics.record_outcome(self._metric, outcome)
        except OrgBacklogFull:
            disposition = await self._hand_off(message)
        except asyncio.CancelledError:
            disposition = None  # draining: held, nacked once pulling has stopped
        except Exception as error:  # noqa: BLE001 - the handler should not raise; if it does, retry later
            log.exception("handler raised; nacking", error=str(error))
            disposition = Disposition.NACK
        finally:
            if disposition is None:
                delivery.state = DeliveryState.HELD
            else:
                self._settle(delivery, disposition)

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

    def _nack_held(self) -> None:
        for delivery in self.deliveries(DeliveryState.HELD):
            self._settle(delivery, Disposition.NACK)

    def _settle(self, delivery: Delivery, disposition: Disposition) -> None:
        if delivery.state is DeliveryState.SETTLED:
            return
        delivery.state = DeliveryState.SETTLED
        self._deliveries.discard(delivery)
        metrics.message_settled(self._metric, disposition is Disposition.ACK)
        if disposition is Disposition.ACK:
            delivery.message.ack()
            self.stats.acked += 1
        else:
            delivery.message.nack()
            self.stats.nacked += 1


def _pull_thread(stream: Any) -> threading.Thread | None:
    """The client's thread reading the stream (google-cloud-pubsub internals, hence every getattr)."""
    consumer = getattr(getattr(stream, "_manager", None), "_consumer", None)
    thread = getattr(consumer, "_thread", None)
    return thread if isinstance(thread, threading.Thread) else None


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


__all__ = ["Delivery", "DeliveryState", "HandOff", "MessageHandler", "OutcomeKind", "PoolState", "PoolStats",
           "StreamState", "SubscriberPool"]
