"""Stream extracted pages into ONE warehouse write, with bounded memory.

The extraction runs on the event loop (aiohttp); `Writer.write` is blocking and consumes an iterable in
batches. A bounded queue joins the two: each page's rows are handed over as the page arrives, the Writer
(in a worker thread) loads them batch by batch into its staging table, and one MERGE at the end replaces
the org's rows for the run's date range (`range_replace`). So:
- memory is bounded by the queue (a couple of pages) plus one Writer batch, whatever the date range;
- the replace is atomic: readers never see a half-written range, and a redelivered run leaves one copy;
- an aborted write (provider down, bad key) changes nothing; `commit()` after a malformed page keeps the
  rows of the earlier, valid pages (reported by the caller).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import Iterator, Sequence
from typing import Any

from convergence.pipeline.services import RunServices
from convergence.processors._llm.params import DateRange

_END = object()
_ABORT = object()


class _Aborted(Exception):
    """Raised inside the Writer's row iterator: the write is abandoned, nothing is applied."""


class StreamingWrite:
    def __init__(self, services: RunServices, *, org_slug: str, dataset: str, table: str, schema_path: str,
                 date_column: str, date_range: DateRange, partitioning: Any = None,
                 clustering: Sequence[str] | None = None, queue_pages: int = 1):
        self.writer = services.writer
        self.kwargs = {
            "mode": "range_replace", "org_slug": org_slug, "date_column": date_column,
            "date_range": (date_range.start, date_range.end), "schema_path": schema_path,
            "partitioning": partitioning, "clustering": list(clustering) if clustering else None,
        }
        self.dataset = dataset
        self.table = table
        self.handed = 0
        self.result: Any = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_pages)
        self._task: asyncio.Future[Any] | None = None

    def _rows(self) -> Iterator[dict[str, Any]]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if item is _ABORT:
                raise _Aborted()
            yield from item

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(asyncio.to_thread(
                self.writer.write, self.dataset, self.table, self._rows(), **self.kwargs))

    async def _put(self, item: Any) -> None:
        assert self._task is not None
        while True:
            if self._task.done():  # the Writer stopped early (a BigQuery error): surface it
                self._task.result()
                raise RuntimeError(f"the warehouse write to {self.table} ended before its rows were handed over")
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.005)  # back-pressure: the Writer is loading a batch

    async def add_page(self, rows: list[dict[str, Any]]) -> None:
        """Hand one page's rows over (the write starts with the first page)."""
        if not rows:
            return
        self._start()
        await self._put(rows)
        self.handed += len(rows)

    @property
    def started(self) -> bool:
        return self._task is not None

    async def commit(self) -> int:
        """Finish the write (an empty one still clears the range); returns the rows written."""
        self._start()
        await self._put(_END)
        assert self._task is not None
        self.result = await self._task
        return int(getattr(self.result, "rows_written", self.handed))

    async def abort(self) -> None:
        """Abandon the write: the table is left as it was."""
        if self._task is None:
            return
        # Errors here are the write's own ending (or its earlier failure): the caller reports the original one.
        if not self._task.done():
            with contextlib.suppress(Exception):
                await self._put(_ABORT)
        with contextlib.suppress(Exception):
            await self._task

    @property
    def batches(self) -> int:
        return int(getattr(self.result, "batches", 0) or 0)
