"""Where extracted rows go: a table of the org's dataset, typed by a schema file, or the raw-JSON ELT
table (`configs/generic/schemas/api_raw.json`: one JSON record per row plus where it came from).

One extract step is ONE Writer.write (`TableSink.open_write`): batches are handed to it as they fill, it
checks each and spools it to its temporary file, and it loads the file when the step ends. BigQuery
("Quotas and limits" page) allows 1,500 table modifications per table per day (load, copy and query jobs
that write the table); one write per 10,000-row batch spent 100 of them on 1M rows, one per step spends
1 (the Writer starts one more load job per `spool_bytes`, 512 MiB, of spooled rows). Replace modes and
merge load into a staging table and change the target with one MERGE (one DELETE when there are no rows).

Write modes (destination.write_mode):
- `append` (default): rows are added. Every row carries the run_id, and a redelivered run (attempt > 1)
  first deletes the rows an earlier attempt of the same run had written, so a retry never duplicates.
  Tables with a run_id column are therefore written by load jobs only (DML cannot touch rows in the
  streaming buffer); other appends get the Writer's smart insert (a step of < 100 rows: streaming with
  insert ids).
- `overwrite`: the step's rows replace the org's rows (the table's, without an org_slug column).
- `range_replace`: the step's rows replace the org's rows in the run's date range (`date_column`).
- `merge`: the step's rows are merged on `key_columns` (ELT: `row_key`, the hash of `key_fields`).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from convergence.extractors.jsonpath import get_path
from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode
from convergence.pipeline.services import RunServices
from convergence.processors.generic._common import DateRange, identifier, invalid, repo_root, schema_fields

log = structlog.get_logger(__name__)
ELT_SCHEMA = "configs/generic/schemas/api_raw.json"
_STAMP_COLUMNS = {"ingested_at", "extracted_at", "loaded_at", "_loaded_at"}


def json_safe(value: Any) -> Any:
    """A value the Writer can serialise: datetimes as ISO text, decimals as text, nested values kept."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    safe = json_safe(value)
    if safe is value:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return safe


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys (stable, so it can be hashed). Records decoded from JSON need no
    conversion; anything else (datetimes, decimals) is converted only when met."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


class TableSink:
    def __init__(self, services: RunServices, context: RunContext, step_id: str, *, table: str,
                 schema_file: Path | None, mode: str, key_columns: Sequence[str] = (), date_column: str | None = None,
                 date_range: DateRange | None = None, field_map: Mapping[str, str] | None = None,
                 key_fields: Sequence[str] = (), source_url: str = "", partition_field: str | None = None,
                 cluster_fields: Sequence[str] = (), batch_size: int | None = None):
        self.services = services
        self.context = context
        self.step_id = step_id
        self.dataset = services.org_dataset(context.org_slug)
        self.table = identifier(table, "destination table")
        self.elt = schema_file is None
        self.schema_path = schema_file or (repo_root(services) / ELT_SCHEMA)
        self.fields = schema_fields(self.schema_path)
        self.columns = {f["name"]: str(f.get("type", "STRING")).upper() for f in self.fields}
        self.mode = mode
        self.key_fields = list(key_fields)
        self.key_columns = [identifier(c, "key column") for c in (key_columns or (["row_key"] if self.elt else []))]
        self.date_column = identifier(date_column, "date column") if date_column else None
        self.date_range = date_range
        self.field_map = {identifier(k, "column"): str(v) for k, v in (field_map or {}).items()}
        self.source_url = source_url
        self.partition_field = partition_field if partition_field is not None else (
            "extracted_at" if self.elt else None)
        self.cluster_fields = list(cluster_fields) or (["step_id"] if self.elt else [])
        self.batch_size = batch_size
        self._own_writer: Any = None
        self.methods: set[str] = set()  # how the Writer wrote: streaming, load, staged_merge, delete
        self.extracted_at = datetime.now(UTC).isoformat()
        self.row_number = 0
        self.dropped_fields: set[str] = set()
        if mode == "merge" and not self.key_columns:
            raise invalid("write_mode merge needs destination.key_columns")
        if mode == "range_replace" and (not self.date_column or date_range is None):
            raise invalid("write_mode range_replace needs destination.date_column and a run date range")
        unknown = [c for c in [*self.key_columns, *([self.date_column] if self.date_column else [])]
                   if c not in self.columns]
        if unknown:
            raise invalid(f"column(s) {unknown} are not in the destination schema {self.schema_path.name}")

    @property
    def qualified(self) -> str:
        return f"{self.dataset}.{self.table}"

    # -- shaping ---------------------------------------------------------------------------------------
    def shape(self, records: Sequence[Any], page_number: int | None = None) -> list[dict[str, Any]]:
        shaped = []
        for record in records:
            shaped.append(self._elt_row(record, page_number) if self.elt else self._typed_row(record))
            self.row_number += 1
        return shaped

    def _elt_row(self, record: Any, page_number: int | None) -> dict[str, Any]:
        raw = canonical_json(record)
        if self.key_fields and isinstance(record, Mapping):
            material = canonical_json([get_path(record, f) for f in self.key_fields])
        else:
            material = raw
        return {
            "org_slug": self.context.org_slug, "run_id": self.context.run_id, "step_id": self.step_id,
            "source_url": self.source_url, "page_number": page_number, "row_number": self.row_number,
            "row_key": hashlib.sha256(material.encode()).hexdigest(), "raw_json": raw,
            "extracted_at": self.extracted_at,
        }

    def _typed_row(self, record: Any) -> dict[str, Any]:
        if not isinstance(record, Mapping):
            raise invalid(f"a typed destination needs JSON objects as rows, got {type(record).__name__}",
                          ErrorCode.PROVIDER_BAD_RESPONSE)
        row: dict[str, Any] = {}
        for name, kind in self.columns.items():
            if name in self.field_map:
                value = get_path(record, self.field_map[name])
            elif name in record:
                value = record[name]
            elif name == "org_slug":
                value = self.context.org_slug
            elif name == "run_id":
                value = self.context.run_id
            elif name in _STAMP_COLUMNS:
                value = self.extracted_at
            else:
                continue
            if kind in ("STRING", "JSON") and isinstance(value, Mapping | list):
                value = canonical_json(value)
            row[name] = json_safe(value)
        if "org_slug" in self.columns:
            row["org_slug"] = self.context.org_slug  # never taken from the API: isolation
        extra = set(record) - set(self.columns) - set(self.field_map.values())
        if extra:
            self.dropped_fields |= extra
        return row

    # -- writing ---------------------------------------------------------------------------------------
    @property
    def writer(self) -> Any:
        """The shared Writer, or a copy of it (same table cache) that batches by this sink's batch size: the
        Writer holds one of its own batches while checking it, so memory stays bounded by this sink's."""
        shared = self.services.writer
        if self.batch_size is None or self.batch_size == getattr(shared, "batch_size", self.batch_size):
            return shared
        if self._own_writer is None:
            self._own_writer = copy.copy(shared)
            self._own_writer.batch_size = self.batch_size
        return self._own_writer

    def writer_options(self, mode: str) -> dict[str, Any]:
        """Keyword arguments of `Writer.write` for one write in `mode`."""
        options: dict[str, Any] = {"mode": mode, "org_slug": self.context.org_slug,
                                   "schema_path": str(self.schema_path)}
        if self.key_columns and mode == "merge":
            options["key_columns"] = list(self.key_columns)
        elif mode == "append" and "run_id" in self.columns:
            # Never stream rows that a later DML must be able to delete (BigQuery refuses DML on rows still in
            # the streaming buffer): a redelivered run deletes its earlier attempt's rows by run_id. Naming key
            # columns on an append is how the Writer is told to use load jobs.
            options["key_columns"] = ["run_id"]
        if self.date_column and self.date_range is not None:
            options["date_column"] = self.date_column
            options["date_range"] = (self.date_range.start, self.date_range.end)
        if self.partition_field:
            options["partitioning"] = self.partition_field
        if self.cluster_fields:
            options["clustering"] = list(self.cluster_fields)
        return options

    def open_write(self) -> StepWrite:
        """The step's one write: `send` each batch, then `finish` (or `abort`); use it with `async with`."""
        return StepWrite(self)

    async def prepare(self) -> int:
        """A redelivered run (attempt > 1) in append mode: delete what an earlier attempt of the same run
        wrote, so a retry never duplicates rows. Returns the number of rows removed."""
        if self.mode != "append" or self.context.attempt <= 1 or "run_id" not in self.columns:
            return 0
        return await asyncio.to_thread(self._delete_run_rows)

    def _delete_run_rows(self) -> int:
        from convergence.warehouse.facade import Warehouse

        warehouse = Warehouse(self.services, dataset=self.dataset)
        sql = f"DELETE FROM {warehouse.ref(self.table)} WHERE run_id = @run_id"  # noqa: S608 - validated names
        params = {"run_id": self.context.run_id}
        if "org_slug" in self.columns:
            sql += " AND org_slug = @org_slug"
            params["org_slug"] = self.context.org_slug
        # A first attempt that never created the table left nothing to delete.
        deleted = warehouse.dml_blocking(sql, params, missing_table_ok=True)
        log.info("rows of an earlier attempt removed", table=self.qualified, rows=deleted)
        return deleted


class _Aborted(Exception):  # noqa: N818 - not an error: the step stopped feeding its write
    """Raised inside the Writer's thread when the step abandons its write (nothing is loaded)."""


_END = object()


class StepWrite:
    """One `Writer.write` for a whole step, fed batch by batch from the event loop.

    The Writer runs in a worker thread and pulls its rows from a generator that asks the loop for the
    next batch, so it checks and spools each batch while later pages are fetched, and loads (or stages and
    merges) once, when `finish` ends the rows. `send` returns once the Writer has asked for the rows after
    that batch (with the Writer batching by the sink's batch size: the batch is in the spool), so the caller
    holds at most the batch it fills and the one being sent. A replace mode touches the table only at the
    end: `abort` (a failed step) leaves it unchanged. Nothing starts before the first batch, so an append
    step that gets no rows never creates its table.
    """

    def __init__(self, sink: TableSink):
        self.sink = sink
        self._inbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        self._handed: asyncio.Future[None] | None = None  # the batch the Writer took last: resolved when done
        self._task: asyncio.Future[Any] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._ending = False
        self.result: Any = None

    @property
    def started(self) -> bool:
        return self._task is not None

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        sink = self.sink
        write = functools.partial(sink.writer.write, sink.dataset, sink.table, self._rows(loop),
                                  **sink.writer_options(sink.mode))
        # Its own thread, not the loop's default pool: the write waits in it for the whole step, and a few
        # concurrent steps would otherwise hold every thread that other `to_thread` calls need.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="step-write")
        self._task = loop.run_in_executor(self._thread, contextvars.copy_context().run, write)
        self._task.add_done_callback(lambda _: self._thread.shutdown(wait=False))

    def _rows(self, loop: asyncio.AbstractEventLoop) -> Any:
        while True:  # in the Writer's thread
            batch = asyncio.run_coroutine_threadsafe(self._take(), loop).result()
            if batch is _END:
                return
            yield from batch

    async def _take(self) -> Any:
        if self._handed is not None and not self._handed.done():
            self._handed.set_result(None)  # asked for more: the previous batch is checked and spooled
        item = await self._inbox.get()
        if item is None:
            raise _Aborted
        if item is _END:
            return _END
        batch, self._handed = item
        return batch

    async def _until(self, awaitable: Any) -> None:
        """Await `awaitable`, or the write's end, whichever comes first (a write that failed raises here)."""
        assert self._task is not None
        waiter = asyncio.ensure_future(awaitable)
        try:
            await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiter.done():
                waiter.cancel()
        if not waiter.done() or waiter.cancelled():
            self._task.result()  # the Writer's own error (a refused row, a failed table check)
            raise RuntimeError(f"the write to {self.sink.qualified} ended before taking every batch")
        waiter.result()

    async def send(self, rows: list[dict[str, Any]], batch_index: int = 0) -> None:
        """Hand one batch to the write (the BatchBuffer sink signature); returns when it is spooled."""
        if not rows and self.sink.mode in ("append", "merge"):
            return  # nothing to add; a replace mode starts even without rows, to clear its scope
        if self._task is None:
            self._start()
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._until(self._inbox.put((rows, handed)))
        await self._until(handed)

    async def finish(self) -> Any:
        """End the rows and wait for the load (or the staged MERGE). Returns the WriteResult, None when an
        append or merge step had no rows (nothing was written)."""
        if self._task is None:
            if self.sink.mode in ("append", "merge"):
                return None
            self._start()  # a replace mode with no rows still clears its range
        assert self._task is not None
        self._ending = True
        await self._until(self._inbox.put(_END))
        self.result = await self._task
        self.sink.methods.add(str(getattr(self.result, "method", "")))
        return self.result

    async def abort(self) -> None:
        """Abandon the write: the Writer stops before loading anything (its staging table is dropped)."""
        task = self._task
        if task is None or task.done():
            return
        while not self._inbox.empty():
            self._inbox.get_nowait()
        self._inbox.put_nowait(None)
        if self._ending:
            return  # the load is under way in its thread; it cannot be interrupted
        try:
            await task
        except (_Aborted, Exception):  # noqa: BLE001 - the step's own error is what is reported
            return

    @property
    def rows_written(self) -> int:
        return int(getattr(self.result, "rows_written", 0) or 0)

    async def __aenter__(self) -> StepWrite:
        return self

    async def __aexit__(self, kind: Any, error: Any, trace: Any) -> None:
        if self._task is not None and self.result is None:
            await self.abort()
