"""Rows go to a sink in batches of `batch_size`, handed over as they fill: memory stays bounded by the batch
size, never by the number of rows. (The extractors' sink spools each batch into one write per step.)

With `overlap` (the default), a full batch is written in the background while the next one fills: fetching
and loading overlap, and at most two batches are held (the one being written and the one filling). Batches
are still written one at a time, in order, so the first one can apply a replace mode before the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Sink = Callable[[list[dict[str, Any]], int], Awaitable[None]]  # (rows, batch index from 0)


class BatchBuffer:
    def __init__(self, batch_size: int, sink: Sink, overlap: bool = True):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.sink = sink
        self.overlap = overlap
        self.rows: list[dict[str, Any]] = []
        self.written = 0  # rows the sink has taken (for a spooling sink: spooled, not yet loaded)
        self.batches = 0  # writes started
        self.peak = 0  # most rows held at once: filling + being written (a test checks it stays bounded)
        self._inflight: asyncio.Task[None] | None = None
        self._inflight_rows = 0

    async def add(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.rows.append(row)
            held = len(self.rows) + self._inflight_rows
            if held > self.peak:
                self.peak = held
            if len(self.rows) >= self.batch_size:
                await self._emit()

    async def flush(self) -> None:
        """Write what is buffered (also an empty final batch when nothing was ever written, so the sink
        can still apply a replace mode), and wait until every write has completed."""
        if self.rows or self.batches == 0:
            await self._emit()
        await self.drain()

    async def drain(self) -> None:
        """Wait for the write in flight (its error, if any, is raised here)."""
        task, self._inflight = self._inflight, None
        if task is not None:
            try:
                await task
            finally:
                self._inflight_rows = 0

    def cancel(self) -> None:
        """Stop waiting for a write in flight (the run is being cancelled or failed elsewhere)."""
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()

    async def _emit(self) -> None:
        rows, self.rows = self.rows, []
        await self.drain()  # one write at a time, in order
        index = self.batches
        self.batches += 1
        if not self.overlap:
            await self.sink(rows, index)
            self.written += len(rows)
            return
        self._inflight_rows = len(rows)
        self._inflight = asyncio.create_task(self._write(rows, index), name=f"batch-write-{index}")

    async def _write(self, rows: list[dict[str, Any]], index: int) -> None:
        await self.sink(rows, index)
        self.written += len(rows)

    async def __aenter__(self) -> BatchBuffer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._inflight is not None and not self._inflight.done():
            self.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._inflight
