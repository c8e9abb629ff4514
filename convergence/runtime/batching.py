"""Micro-batching for the consumer's hot path: many concurrent runs, one BigQuery call.

Each caller submits one item and awaits its own result. Items that arrive while a batch is being
gathered (up to `max_delay` seconds, or `max_size` items) go to the backend in one call. At most
`max_in_flight` batches run at once, so a slow backend makes batches bigger instead of more numerous:
the same idea as a database's group commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

BatchFunction = Callable[[list[T]], Awaitable[Sequence[R]]]


class MicroBatcher(Generic[T, R]):
    def __init__(self, process: BatchFunction[T, R], *, max_delay: float = 0.005, max_size: int = 500,
                 max_in_flight: int = 2, name: str = "batch"):
        if max_size < 1 or max_in_flight < 1 or max_delay < 0:
            raise ValueError("max_size and max_in_flight must be >= 1 and max_delay >= 0")
        self.process = process
        self.max_delay = max_delay
        self.max_size = max_size
        self.name = name
        self._max_in_flight = max_in_flight
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gatherer: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        self._bind_loop()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._gatherer is None or self._gatherer.done():
            self._gatherer = asyncio.create_task(self._gather(), name=f"{self.name}-gather")
        return await future

    async def drain(self) -> None:
        """Wait until every submitted item has been processed (at shutdown)."""
        while self._queue or self._running or (self._gatherer is not None and not self._gatherer.done()):
            waiting = [t for t in (self._gatherer, *self._running) if t is not None and not t.done()]
            if waiting:
                await asyncio.wait(waiting)
            elif self._queue:
                self._gatherer = asyncio.create_task(self._gather(), name=f"{self.name}-gather")
            else:
                await asyncio.sleep(0)  # finished tasks leave `_running` in their done callbacks

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests): nothing of the old one carries over
            self._loop = loop
            self._queue = []
            self._gatherer = None
            self._running = set()
            self._slots = asyncio.Semaphore(self._max_in_flight)

    async def _gather(self) -> None:
        assert self._slots is not None
        while self._queue:
            await self._slots.acquire()  # wait for a free batch slot while items keep arriving
            if len(self._queue) < self.max_size and self.max_delay:
                await asyncio.sleep(self.max_delay)
            batch, self._queue = self._queue[: self.max_size], self._queue[self.max_size:]
            task = asyncio.create_task(self._run(batch), name=f"{self.name}-run")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        assert self._slots is not None
        try:
            results = await self.process([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
        except BaseException as error:  # noqa: BLE001 - every caller of the batch sees the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(error if isinstance(error, Exception) else RuntimeError(repr(error)))
            if not isinstance(error, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self.batches += 1
            self.items += len(batch)
            self._slots.release()


class GroupCommit:
    """`await commit()` returns once a flush that started after the call has finished: the writes the
    caller staged before calling are durable (or the flush's failure is raised). Concurrent callers share
    one flush."""

    def __init__(self, flush: Callable[[], Awaitable[None]], *, max_delay: float = 0.01, max_in_flight: int = 1,
                 name: str = "commit"):
        async def process(items: list[None]) -> list[None]:
            await flush()
            return [None] * len(items)

        self._batcher: MicroBatcher[None, None] = MicroBatcher(process, max_delay=max_delay, max_size=1_000_000,
                                                               max_in_flight=max_in_flight, name=name)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0

    async def __call__(self) -> None:
        await self._batcher.submit(None)

    def soon(self, delay: float = 0.0) -> None:
        """Ask for a flush within `delay` seconds without waiting for it (a run's start row: visible soon,
        nobody waits; a run that ends sooner commits it with its final rows). One timer serves all callers."""
        if self._timer is not None and not self._timer.cancelled() and self._timer_due <= time.monotonic() + delay:
            return
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = time.monotonic() + delay
        self._timer = loop.call_later(delay, self._flush_in_background)

    def _flush_in_background(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # failures are the flush's to log

    async def drain(self) -> None:
        if self._timer is not None:  # a flush asked for later happens now
            self._timer.cancel()
            self._timer = None
            await self()
        await self._batcher.drain()

    @property
    def flushes(self) -> int:
        return self._batcher.batches
