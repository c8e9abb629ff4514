"""An in-memory stand-in for the streaming pull client, just enough for SubscriberPool.

It keeps the client's shutdown order (google-cloud-pubsub StreamingPullManager._shutdown): stop pulling,
shut the scheduler down (nacking what it never dispatched), stop the sender thread, then call the
future's done callbacks. An ack or nack sent after the sender stopped is recorded as lost, as the real
client silently drops it. Every step goes into one journal, so tests can check the order."""

from __future__ import annotations

import asyncio
import itertools
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_ack_ids = itertools.count(1)


class FakeMessage:
    def __init__(self, stream: FakeStream, message_id: str, data: bytes = b"{}",
                 attributes: dict[str, str] | None = None, delivery_attempt: int | None = None):
        self._stream = stream
        self.message_id = message_id
        self.ack_id = f"{message_id}#{next(_ack_ids)}"
        self.data = data
        self.attributes = dict(attributes or {})
        self.delivery_attempt = delivery_attempt
        self.publish_time = datetime.now(UTC)

    def ack(self) -> None:
        self._stream.settle(self, "ack")

    def nack(self) -> None:
        self._stream.settle(self, "nack")


@dataclass(frozen=True)
class Settlement:
    ack_id: str
    message_id: str
    kind: str  # ack | nack
    while_pulling: bool


class FakeStream:
    """The StreamingPullFuture and the manager behind it."""

    def __init__(self, subscriber: FakeSubscriber, callback: Any, scheduler: Any):
        self.subscriber = subscriber
        self.callback = callback
        self.scheduler = scheduler
        self.pulling = True
        self.sender_running = True
        self.settlements: list[Settlement] = []
        self.lost: list[Settlement] = []  # sent after the sender stopped: dropped
        self.closed = threading.Event()
        self.pulling_stopped = threading.Event()
        self.sender_busy = threading.Event()
        self.sender_busy.set()
        self._lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._settled: dict[str, threading.Event] = {}
        self._done_callbacks: list[Any] = []
        self._cancelled = False
        self._error: BaseException | None = None

    # -- the test's side ----------------------------------------------------------------------
    def message(self, message_id: str, **fields: Any) -> FakeMessage:
        return FakeMessage(self, message_id, **fields)

    def deliver(self, message_id: str, **fields: Any) -> FakeMessage:
        """As the client does: the message goes to the scheduler, which calls the pool's callback."""
        message = self.message(message_id, **fields)
        self.scheduler.schedule(self.callback, message)
        return message

    def end(self, error: BaseException | None = None) -> None:
        """The stream ends by itself (the server closed it, the subscription was deleted, ...)."""
        threading.Thread(target=self._shutdown, args=(error,), name="fake-rpc-done").start()

    def wait_settled(self, message: FakeMessage, timeout: float = 10.0) -> Settlement:
        if not self._event(message.ack_id).wait(timeout):
            raise AssertionError(f"{message.ack_id} not settled within {timeout}s")
        return next(s for s in self.settlements + self.lost if s.ack_id == message.ack_id)

    def of(self, message: FakeMessage) -> list[Settlement]:
        with self._lock:
            return [s for s in self.settlements + self.lost if s.ack_id == message.ack_id]

    # -- the pool's side -----------------------------------------------------------------------
    def settle(self, message: FakeMessage, kind: str) -> None:
        with self._lock:
            record = Settlement(message.ack_id, message.message_id, kind, self.pulling)
            if self.sender_running:
                self.settlements.append(record)
                self.subscriber.journal.append(f"{kind} {message.message_id}")
            else:
                self.lost.append(record)
                self.subscriber.journal.append(f"lost {kind} {message.message_id}")
            self._event(message.ack_id).set()

    def _event(self, ack_id: str) -> threading.Event:
        with self._events_lock:
            return self._settled.setdefault(ack_id, threading.Event())

    def cancel(self) -> bool:
        self._cancelled = True
        threading.Thread(target=self._shutdown, args=(None,), name="fake-shutdown").start()
        return True

    def _shutdown(self, error: BaseException | None) -> None:
        with self._lock:
            if self.closed.is_set() or not self.pulling:
                return
            self.pulling = False
            self.subscriber.journal.append("pulling stopped")
        self.pulling_stopped.set()
        for message in self.scheduler.shutdown(await_msg_callbacks=False):
            message.nack()
        self.sender_busy.wait()  # a test may hold the sender in an RPC
        with self._lock:
            self.sender_running = False
            self.subscriber.journal.append("sender stopped")
        self._error = error
        self.closed.set()
        for callback in self._done_callbacks:
            callback(self)

    def add_done_callback(self, callback: Any) -> None:
        self._done_callbacks.append(callback)

    def done(self) -> bool:
        return self.closed.is_set()

    def cancelled(self) -> bool:
        return self._cancelled

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._error

    def result(self, timeout: float | None = None) -> bool:
        if not self.closed.wait(timeout):
            raise TimeoutError
        if self._error is not None:
            raise self._error
        return True


class FakeSubscriber:
    """SubscriberClient: subscribe(), get_subscription() (the pool's reachability probe), close()."""

    def __init__(self) -> None:
        self.journal: list[str] = []
        self.streams: list[FakeStream] = []
        self.probe_error: BaseException | None = None
        self.closed = False
        self.subscribed = asyncio.Event()  # subscribe() is called on the loop

    @property
    def stream(self) -> FakeStream:
        return self.streams[-1]

    def subscribe(self, subscription: str, callback: Any, flow_control: Any = None, scheduler: Any = None) -> Any:
        stream = FakeStream(self, callback, scheduler)
        self.streams.append(stream)
        self.subscribed.set()
        return stream

    def get_subscription(self, request: dict[str, str], retry: Any = None,
                         timeout: float | None = None) -> dict[str, str]:
        if self.probe_error is not None:
            raise self.probe_error
        return {"name": request["subscription"]}

    def close(self) -> None:
        self.journal.append("client closed")
        self.closed = True
