"""Where extracted rows go: a table of the org's dataset, typed by a schema file, or the raw-JSON ELT
table (`configs/generic/schemas/api_raw.json`: one JSON record per row plus where it came from).

Write modes (destination.write_mode):
- `append` (default): rows are added. Every row carries the run_id, and a redelivered run (attempt > 1)
  first deletes the rows an earlier attempt of the same run had written, so a retry never duplicates.
  Tables with a run_id column are therefore written by load jobs only (DML cannot touch rows in the
  streaming buffer); other appends get the Writer's smart insert (< 100 rows: streaming with insert ids).
- `overwrite`: the first batch replaces the table's content, later batches append.
- `range_replace`: the first batch replaces the org's rows in the run's date range (`date_column`).
- `merge`: every batch is merged on `key_columns` (ELT: `row_key`, the hash of `key_fields`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from convergence.extractors.jsonpath import get_path
from convergence.pipeline.context import RunContext
from convergence.processors.generic._common import DateRange, call_writer, identifier, invalid, repo_root, schema_fields

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
    def __init__(self, services: Any, context: RunContext, step_id: str, *, table: str, schema_file: Path | None,
                 mode: str, key_columns: Sequence[str] = (), date_column: str | None = None,
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
                          "PROVIDER_BAD_RESPONSE")
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
        """The shared Writer, or one whose batch size is this sink's when its batches are larger: a batch
        then goes in ONE load job (BigQuery limits load jobs per table and day) instead of several."""
        shared = self.services.writer
        if self.batch_size is None or self.batch_size <= getattr(shared, "batch_size", self.batch_size):
            return shared
        if self._own_writer is None:
            from convergence.warehouse.writer import Writer

            self._own_writer = Writer(self.services.bigquery, self.services.settings, batch_size=self.batch_size)
        return self._own_writer

    def writer_options(self, mode: str) -> dict[str, Any]:
        """Keyword arguments of `Writer.write` for one write in `mode`."""
        options: dict[str, Any] = {"mode": mode, "org_slug": self.context.org_slug,
                                   "schema_path": str(self.schema_path)}
        if self.key_columns and mode == "merge":
            options["key_columns"] = list(self.key_columns)
        elif mode == "append":
            # Never stream rows that a later DML must be able to delete (BigQuery refuses DML on rows still in
            # the streaming buffer): rows with a run_id (a redelivered run deletes its earlier attempt's rows
            # by it) and the later batches of a replace-mode write (the next run's replace deletes them).
            # Naming key columns on an append is how the Writer is told to use load jobs.
            if "run_id" in self.columns:
                options["key_columns"] = ["run_id"]
            elif self.mode != "append" and "org_slug" in self.columns:
                options["key_columns"] = ["org_slug"]
        if self.date_column and self.date_range is not None:
            options["date_column"] = self.date_column
            options["date_range"] = (self.date_range.start, self.date_range.end)
        if self.partition_field:
            options["partitioning"] = self.partition_field
        if self.cluster_fields:
            options["clustering"] = list(self.cluster_fields)
        return options

    async def write(self, rows: list[dict[str, Any]], batch_index: int) -> None:
        """One batch: the first applies the write mode (replace, overwrite), later ones append (merge
        stays merge). A run that yields no rows still applies a replace mode to clear its range."""
        mode = self.mode if batch_index == 0 or self.mode == "merge" else "append"
        if not rows and mode in ("append", "merge"):
            return
        result = await call_writer(self.services, self.dataset, self.table, rows, writer=self.writer,
                                   **self.writer_options(mode))
        self.methods.add(str(getattr(result, "method", "")))

    async def prepare(self) -> int:
        """A redelivered run (attempt > 1) in append mode: delete what an earlier attempt of the same run
        wrote, so a retry never duplicates rows. Returns the number of rows removed."""
        if self.mode != "append" or self.context.attempt <= 1 or "run_id" not in self.columns:
            return 0
        return await asyncio.to_thread(self._delete_run_rows)

    def _delete_run_rows(self) -> int:
        from google.api_core.exceptions import NotFound

        from convergence.warehouse.query import QueryRunner

        client = self.services.bigquery
        sql = f"DELETE FROM `{client.project}.{self.dataset}.{self.table}` WHERE run_id = @run_id"  # noqa: S608
        params = {"run_id": self.context.run_id}
        if "org_slug" in self.columns:
            sql += " AND org_slug = @org_slug"
            params["org_slug"] = self.context.org_slug
        try:
            deleted = QueryRunner(client, self.services.settings).dml(sql, params)
        except NotFound:
            return 0
        log.info("rows of an earlier attempt removed", table=self.qualified, rows=deleted)
        return deleted
