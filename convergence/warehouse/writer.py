"""The one write call processors use: `Writer(client, settings).write(dataset, table, rows, mode=...)`.

Rows are consumed from any iterable in batches of `batch_size`, so memory is bounded by one batch. Checked
batches are spooled to a temporary file and go to BigQuery in ONE load job per write (a new job only each
`spool_bytes`, 512 MiB by default): BigQuery ("Quotas and limits" page) allows 1,500 table modifications
per table per day, counting every load, copy and query job that writes the table, failed loads included
("Optimize load jobs" page). One job per 10,000-row batch would spend 100 of them on 1M rows; one per
write spends 1. The spool is a file, not RAM, where the disk is real; on Cloud Run the container's file
system is held in memory (container contract), so there `spool_bytes` also bounds the memory a write uses.
(The Storage Write API's pending streams would commit atomically without a file; load jobs are kept: they
cost nothing and the emulator serves them the same way.)

Modes (pipelines declare one in YAML):
- `append`: insert, by load jobs (resumable upload). With `streaming=True`, a single small batch
  (< `streaming_insert_threshold` rows) goes by streaming insert with deterministic insert ids instead.
  Opt in only for tables that no write ever range-replaces, merges or overwrites: on BigQuery, rows
  written by `tabledata.insertAll` in the last 30 minutes cannot be changed by UPDATE, DELETE, MERGE or
  TRUNCATE (the DML page, "Limitations"), so a rerun's range replace over them would fail. Streaming is
  only as idempotent as BigQuery's best-effort insert-id de-duplication: use it for append-only logs.
- `overwrite`: replace the org's rows (every row when the table has no `org_slug` column).
- `truncate`: replace every row of the table.
- `range_replace`: replace the org's rows whose `date_column` falls in `date_range` (inclusive dates).
- `merge`: upsert on `key_columns` (the last row wins among rows with the same keys).

The four idempotent modes load every batch into a private staging table, then apply it with ONE MERGE
statement, so the change is atomic and re-running the same write leaves exactly one copy of every row
(no reliance on insert ids). Rows outside the declared range or of another org are refused, because the
next run's delete would not see them. Google errors become TransientStepError (5xx, rate limits, network)
or PermanentStepError (other 4xx), with the table and operation in the message.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import structlog
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from convergence.observability import metrics
from convergence.pipeline.errors import ErrorCode, PermanentStepError, StepError, TransientStepError
from convergence.settings import Settings
from convergence.warehouse.client import call_retry
from convergence.warehouse.errors import to_step_error
from convergence.warehouse.identifiers import (
    InvalidIdentifier,
    validate_column,
    validate_dataset,
    validate_org_slug,
    validate_table,
)
from convergence.warehouse.query import QueryRunner, Typed, canonical_type
from convergence.warehouse.tables import SchemaFileError, ensure_dataset, ensure_table

log = structlog.get_logger(__name__)

_SEQ = "_cv_seq"  # staging-only column: input order, so the last duplicate wins a merge
_TABLE_CACHE_SECONDS = 300.0
SPOOL_BYTES = 512 * 1024 * 1024


class WriteMode(StrEnum):
    APPEND = "append"
    OVERWRITE = "overwrite"
    TRUNCATE = "truncate"
    RANGE_REPLACE = "range_replace"
    MERGE = "merge"


@dataclass(frozen=True)
class WriteResult:
    table_id: str
    mode: WriteMode
    rows_written: int
    batches: int
    method: str  # streaming | load | staged_merge | delete | none
    dml_affected_rows: int = 0
    bigquery_calls: int = 0
    load_jobs: int = 0
    added_columns: tuple[str, ...] = ()
    schema_problems: tuple[str, ...] = ()
    duration_ms: int = 0


# -- the validated request -------------------------------------------------------------------------------


@dataclass
class _Target:
    project: str
    dataset: str
    table: str
    mode: WriteMode
    schema: list[bigquery.SchemaField]
    org_slug: str | None
    date_column: str | None
    date_type: str | None
    date_range: tuple[date, date] | None
    keys: list[str]
    added_columns: tuple[str, ...] = ()
    schema_problems: tuple[str, ...] = ()

    @property
    def table_id(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def ref(self) -> str:
        return f"`{self.table_id}`"

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.schema]

    @property
    def org_column(self) -> bool:
        return self.org_slug is not None and "org_slug" in self.columns

    streaming: bool = False

    @property
    def streaming_allowed(self) -> bool:
        return self.streaming and self.mode is WriteMode.APPEND and self.date_range is None and not self.keys


def _as_date(value: Any, what: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise PermanentStepError(f"{what} {value!r} is not an ISO date (YYYY-MM-DD)",
                                 code=ErrorCode.INVALID_PARAMETERS) from None


# -- rows ------------------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "isoformat"):  # datetime.time
        return value.isoformat()
    raise TypeError(f"value of type {type(value).__name__} cannot be written to BigQuery")


def _dumps(row: Mapping[str, Any]) -> str:
    try:
        return json.dumps(row, default=_json_default, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as error:  # e.g. an object, or NaN in a strict field
        raise PermanentStepError(f"a row cannot be written: {error}", code=ErrorCode.INVALID_ROW) from None


class _RowChecker:
    """Checks each row against the table before anything is sent: columns, org, range, keys."""

    def __init__(self, target: _Target):
        self.target = target
        self.known = set(target.columns)
        self.required = [f.name for f in target.schema if (f.mode or "").upper() == "REQUIRED"]

    def check(self, index: int, row: Any) -> dict[str, Any]:
        t = self.target
        if not isinstance(row, Mapping):
            raise self._bad(index, f"is a {type(row).__name__}, not an object")
        unknown = [k for k in row if k not in self.known]
        if unknown:
            raise self._bad(index, f"has columns that {t.table} does not: {sorted(unknown)[:5]}")
        if t.org_column:
            owner = row.get("org_slug")
            if owner is None:
                row = {**row, "org_slug": t.org_slug}
            elif owner != t.org_slug:
                raise PermanentStepError(f"row {index} belongs to org {str(owner)[:60]!r}, not {t.org_slug!r}: "
                                         "a write never crosses orgs", code=ErrorCode.ORG_MISMATCH)
        missing = [k for k in self.required if row.get(k) is None]
        if missing:
            raise self._bad(index, f"has no value for REQUIRED columns {missing}")
        if t.date_range is not None and t.date_column:
            self._check_range(index, row.get(t.date_column))
        null_keys = [k for k in t.keys if row.get(k) is None]
        if null_keys:
            raise self._bad(index, f"has NULL key columns {null_keys} (a NULL key never matches: duplicates)")
        return dict(row)

    def _check_range(self, index: int, value: Any) -> None:
        t = self.target
        assert t.date_range is not None and t.date_column is not None
        day = self._day(value)
        if day is None:
            raise self._bad(index, f"has no usable {t.date_column} ({str(value)[:40]!r})")
        start, end = t.date_range
        if not start <= day <= end:
            raise PermanentStepError(
                f"row {index}: {t.date_column} {day} is outside the write's range {start}..{end}; the next "
                "run's replace would not remove it", code=ErrorCode.ROW_OUTSIDE_RANGE)

    def _day(self, value: Any) -> date | None:
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):  # epoch seconds
            value = datetime.fromtimestamp(value, tz=UTC)
        if isinstance(value, str):
            try:
                value = (date.fromisoformat(value) if self.target.date_type == "DATE"
                         else datetime.fromisoformat(value.replace(" UTC", "+00:00")))
            except ValueError:
                return None
        if isinstance(value, datetime):
            if value.tzinfo is not None and self.target.date_type == "TIMESTAMP":
                value = value.astimezone(UTC)
            return value.date()
        return value if isinstance(value, date) else None

    def _bad(self, index: int, what: str) -> PermanentStepError:
        return PermanentStepError(f"row {index} for {self.target.table_id} {what}", code=ErrorCode.INVALID_ROW)


def _batched(rows: Iterable[Any], size: int, checker: _RowChecker) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    index = 0
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        checked = [checker.check(index + i, row) for i, row in enumerate(chunk)]
        index += len(chunk)
        yield checked


# -- the writer ------------------------------------------------------------------------------------------


@dataclass
class _Calls:
    count: int = 0

    def add(self, n: int = 1) -> None:
        self.count += n
        metrics.bigquery_calls("writer", n)


@dataclass
class _CachedTable:
    table: bigquery.Table
    added: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    at: float = field(default_factory=time.monotonic)


class Writer:
    def __init__(self, client: bigquery.Client, settings: Settings, *, batch_size: int | None = None,
                 streaming_threshold: int | None = None, job_timeout: float = 600.0,
                 spool_bytes: int = SPOOL_BYTES, spool_dir: str | None = None):
        if spool_bytes < 1:
            raise ValueError("spool_bytes must be positive")
        self.spool_bytes = spool_bytes
        self.spool_dir = spool_dir  # None: the system's temporary directory (TMPDIR)
        self.client = client
        self.settings = settings
        self.batch_size = batch_size or settings.write_batch_size
        self.streaming_threshold = streaming_threshold or settings.streaming_insert_threshold
        self.job_timeout = job_timeout
        self._tables: dict[tuple[Any, ...], _CachedTable] = {}
        self._lock = threading.Lock()

    # -- public ------------------------------------------------------------------------------------------
    def write(self, dataset: str, table: str, rows: Iterable[Mapping[str, Any]], *,
              mode: WriteMode | str = WriteMode.APPEND, org_slug: str | None = None,
              date_column: str | None = None, date_range: tuple[Any, Any] | None = None,
              key_columns: Sequence[str] | None = None, schema_path: str | Path | None = None,
              partitioning: Any = None, clustering: Sequence[str] | None = None,
              streaming: bool = False) -> WriteResult:
        started = time.perf_counter()
        calls = _Calls()
        doing = f"{mode} write to {dataset}.{table}"
        try:
            target = self._target(dataset, table, mode, org_slug, date_column, date_range, key_columns,
                                  schema_path, partitioning, clustering, calls)
            target.streaming = streaming
            doing = f"{target.mode.value} write to {target.table_id}"
            checker = _RowChecker(target)
            batches = _batched(rows, self.batch_size, checker)
            if target.mode is WriteMode.APPEND:
                result = self._append(target, batches, calls)
            else:
                result = self._replace(target, batches, calls)
        except StepError:
            raise
        except InvalidIdentifier as error:
            raise PermanentStepError(str(error), code=ErrorCode.INVALID_IDENTIFIER) from None
        except SchemaFileError as error:
            raise PermanentStepError(str(error), code=ErrorCode.CONFIG_INVALID) from None
        except (gexc.GoogleAPIError, OSError) as error:
            raise to_step_error(error, doing) from error
        result = replace(result, bigquery_calls=calls.count, duration_ms=int((time.perf_counter() - started) * 1000),
                         added_columns=target.added_columns, schema_problems=target.schema_problems)
        log.info("warehouse write", table=result.table_id, mode=result.mode.value, rows=result.rows_written,
                 method=result.method, batches=result.batches, calls=result.bigquery_calls,
                 duration_ms=result.duration_ms)
        return result

    # -- request validation and table ---------------------------------------------------------------------
    def _target(self, dataset: str, table: str, mode: WriteMode | str, org_slug: str | None,
                date_column: str | None, date_range: tuple[Any, Any] | None, key_columns: Sequence[str] | None,
                schema_path: str | Path | None, partitioning: Any, clustering: Sequence[str] | None,
                calls: _Calls) -> _Target:
        try:
            write_mode = WriteMode(str(getattr(mode, "value", mode)).lower())
        except ValueError:
            raise PermanentStepError(f"unknown write mode {mode!r}; one of {[m.value for m in WriteMode]}",
                                     code=ErrorCode.CONFIG_INVALID) from None
        validate_dataset(dataset)
        validate_table(table)
        if org_slug is not None:
            validate_org_slug(org_slug)
            owned = {self.settings.org_dataset(org_slug), self.settings.central_dataset}
            if dataset not in owned:
                raise PermanentStepError(f"org {org_slug} may not write to dataset {dataset}: only to "
                                         f"{sorted(owned)}", code=ErrorCode.DATASET_NOT_OWNED)
        keys = [validate_column(k) for k in key_columns or []]
        if date_column is not None:
            validate_column(date_column)
        if write_mode is WriteMode.RANGE_REPLACE and (date_column is None or date_range is None):
            raise PermanentStepError("range_replace needs date_column and date_range", code=ErrorCode.CONFIG_INVALID)
        if write_mode is WriteMode.MERGE and not keys:
            raise PermanentStepError("merge needs key_columns", code=ErrorCode.CONFIG_INVALID)
        dates = None
        if date_range is not None:
            if date_column is None:
                raise PermanentStepError("date_range needs date_column", code=ErrorCode.CONFIG_INVALID)
            dates = (_as_date(date_range[0], "date_range start"), _as_date(date_range[1], "date_range end"))
            if dates[0] > dates[1]:
                raise PermanentStepError(f"date_range {dates[0]}..{dates[1]} ends before it starts",
                                         code=ErrorCode.INVALID_PARAMETERS)
        cached = self._table(dataset, table, schema_path, partitioning, clustering, calls)
        schema = list(cached.table.schema)
        types = {f.name: canonical_type(f.field_type) for f in schema}
        for column in [*keys, *([date_column] if date_column else [])]:
            if column not in types:
                raise PermanentStepError(f"column {column!r} is not in {dataset}.{table}",
                                         code=ErrorCode.CONFIG_INVALID)
        date_type = types.get(date_column) if date_column else None
        if date_type is not None and date_type not in ("DATE", "TIMESTAMP", "DATETIME"):
            raise PermanentStepError(f"date_column {date_column} is {date_type}, not DATE/TIMESTAMP/DATETIME",
                                     code=ErrorCode.CONFIG_INVALID)
        return _Target(self.client.project, dataset, table, write_mode, schema, org_slug, date_column, date_type,
                       dates, keys, cached.added, cached.problems)

    def _table(self, dataset: str, table: str, schema_path: str | Path | None, partitioning: Any,
               clustering: Sequence[str] | None, calls: _Calls) -> _CachedTable:
        path = self._schema_file(schema_path) if schema_path is not None else None
        key = (dataset, table, str(path), path.stat().st_mtime_ns if path else None, repr(partitioning),
               tuple(clustering or ()))
        with self._lock:
            cached = self._tables.get(key)
        if cached and time.monotonic() - cached.at < _TABLE_CACHE_SECONDS:
            return cached
        retry = call_retry(self.settings)
        if path is None:
            calls.add()
            try:
                cached = _CachedTable(self.client.get_table(f"{self.client.project}.{dataset}.{table}", retry=retry))
            except gexc.NotFound:
                raise PermanentStepError(f"table {dataset}.{table} does not exist and no schema_path was given",
                                         code=ErrorCode.TABLE_NOT_FOUND) from None
        else:
            calls.add(2)
            ensure_dataset(self.client, dataset, location=self.settings.bigquery_location, retry=retry)
            change = ensure_table(self.client, dataset, table, path, partitioning=partitioning,
                                  clustering=clustering, retry=retry)
            for problem in change.problems:
                log.warning("schema change not applied", table=change.table_id, problem=problem)
            assert change.table is not None
            cached = _CachedTable(change.table, tuple(change.added_columns), tuple(change.problems))
        with self._lock:
            self._tables[key] = cached
        return cached

    def _schema_file(self, schema_path: str | Path) -> Path:
        path = Path(schema_path)
        if not path.is_absolute():
            path = Path(self.settings.configs_dir).resolve().parent / path
        if not path.is_file():
            raise PermanentStepError(f"schema file not found: {schema_path}", code=ErrorCode.CONFIG_INVALID)
        return path.resolve()

    # -- append ------------------------------------------------------------------------------------------
    def _append(self, target: _Target, batches: Iterator[list[dict[str, Any]]], calls: _Calls) -> WriteResult:
        first = next(batches, [])
        if not first:
            return WriteResult(target.table_id, target.mode, 0, 0, "none")
        second = next(batches, None)
        if second is None and len(first) < self.streaming_threshold and target.streaming_allowed:
            self._stream(target, first, calls)
            return WriteResult(target.table_id, target.mode, len(first), 1, "streaming")
        written, count, jobs = self._load(target.table_id, itertools.chain([first], [second] if second else [],
                                                                            batches), calls)
        return WriteResult(target.table_id, target.mode, written, count, "load", load_jobs=jobs)

    def _stream(self, target: _Target, rows: list[dict[str, Any]], calls: _Calls) -> None:
        # Same rows in the same position get the same id: a retried request is de-duplicated (best effort).
        ids = [hashlib.sha256(f"{target.table_id}|{i}|{_dumps(r)}".encode()).hexdigest()[:32]
               for i, r in enumerate(rows)]
        payload = [json.loads(_dumps(r)) for r in rows]
        calls.add()
        metrics.bigquery_bytes("writer", metrics.json_rows_bytes(payload))
        errors = self.client.insert_rows_json(target.table_id, payload, row_ids=ids,
                                              retry=call_retry(self.settings))
        if errors:
            raise _insert_errors(target.table_id, errors)

    def _load(self, table_id: str, batches: Iterable[list[dict[str, Any]]], calls: _Calls,
              number: bool = False) -> tuple[int, int, int]:
        """Spool the batches to a temporary file and load it with one job (one more per `spool_bytes`).
        `number`: give each row its input position in the staging-only sequence column. Returns rows,
        batches and load jobs."""
        written = count = jobs = 0
        spool = tempfile.TemporaryFile(mode="w+b", dir=self.spool_dir)  # noqa: SIM115 - reused per job
        try:
            for batch in batches:
                for row in batch:
                    if number:
                        row[_SEQ] = written
                    spool.write(_dumps(row).encode("utf-8"))
                    spool.write(b"\n")
                    written += 1
                count += 1
                if spool.tell() >= self.spool_bytes:
                    self._load_file(table_id, spool, calls)
                    jobs += 1
                    spool.seek(0)
                    spool.truncate()
            if spool.tell() or not jobs:
                self._load_file(table_id, spool, calls)
                jobs += 1
        finally:
            spool.close()
        return written, count, jobs

    def _load_file(self, table_id: str, spool: Any, calls: _Calls) -> None:
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
                                        write_disposition=bigquery.WriteDisposition.WRITE_APPEND)
        metrics.bigquery_bytes("writer", spool.tell())
        spool.flush()
        spool.seek(0)
        calls.add()
        # No `size`: a resumable upload (the emulator refuses the multipart one), read from the file in chunks.
        job = self.client.load_table_from_file(spool, table_id, job_config=config)
        job.result(timeout=self.job_timeout, retry=call_retry(self.settings))

    # -- the idempotent modes ----------------------------------------------------------------------------
    def _replace(self, target: _Target, batches: Iterator[list[dict[str, Any]]], calls: _Calls) -> WriteResult:
        runner = QueryRunner(self.client, self.settings, timeout=self.job_timeout)
        first = next(batches, [])
        if not first:
            if target.mode is WriteMode.MERGE:
                return WriteResult(target.table_id, target.mode, 0, 0, "none")
            sql, params = _Sql(target).delete()
            affected = runner.dml(sql, params)
            calls.add(runner.calls)
            return WriteResult(target.table_id, target.mode, 0, 0, "delete", dml_affected_rows=affected)
        staging = _Staging(self.client, self.settings, target, calls)
        try:
            staging.create()
            written, count, jobs = self._load(staging.table_id, itertools.chain([first], batches), calls,
                                              number=target.mode is WriteMode.MERGE)
            sql, params = _Sql(target).merge_from(staging.ref)
            affected = runner.dml(sql, params)
            calls.add(runner.calls)
        finally:
            staging.drop()
        return WriteResult(target.table_id, target.mode, written, count, "staged_merge", dml_affected_rows=affected,
                           load_jobs=jobs)


def _insert_errors(table_id: str, errors: Sequence[Mapping[str, Any]]) -> StepError:
    reasons = {str(e.get("reason")) for item in errors for e in item.get("errors", [])} - {"stopped"}
    sample = "; ".join(f"row {item.get('index')}: {e.get('reason')}: {str(e.get('message'))[:120]}"
                       for item in errors[:3] for e in item.get("errors", [])[:1])
    message = f"streaming insert into {table_id} refused {len(errors)} row(s): {sample}"
    if reasons & {"backendError", "internalError", "timeout", "rateLimitExceeded", "quotaExceeded"}:
        return TransientStepError(message, code=ErrorCode.GOOGLE_API_UNAVAILABLE)
    return PermanentStepError(message, code=ErrorCode.INVALID_ROW)


class _Staging:
    """A private table shaped like the target (plus the sequence column), dropped after the write."""

    def __init__(self, client: bigquery.Client, settings: Settings, target: _Target, calls: _Calls):
        self.client = client
        self.settings = settings
        self.target = target
        self.calls = calls
        name = f"{target.table[:90]}__stage_{uuid.uuid4().hex[:12]}"
        self.table_id = f"{target.project}.{target.dataset}.{validate_table(name)}"

    @property
    def ref(self) -> str:
        return f"`{self.table_id}`"

    def create(self) -> None:
        schema = list(self.target.schema)
        if self.target.mode is WriteMode.MERGE:
            schema.append(bigquery.SchemaField(_SEQ, "INT64"))
        spec = bigquery.Table(self.table_id, schema=schema)
        spec.expires = datetime.now(UTC) + timedelta(days=1)  # BigQuery cleans up if the drop never runs
        self.calls.add()
        self.client.create_table(spec, retry=call_retry(self.settings))

    def drop(self) -> None:
        try:
            self.calls.add()
            self.client.delete_table(self.table_id, not_found_ok=True, retry=call_retry(self.settings))
        except Exception as error:  # noqa: BLE001 - never hide the write's own outcome; expiry cleans up
            log.warning("staging table not dropped", table=self.table_id, error=f"{type(error).__name__}: {error}")


class _Sql:
    """The MERGE/DELETE statements of the idempotent modes. Names are validated; values are parameters."""

    def __init__(self, target: _Target):
        self.t = target

    def _q(self, column: str, alias: str | None = None) -> str:
        quoted = f"`{validate_column(column)}`"
        return f"{alias}.{quoted}" if alias else quoted

    def _scope(self, alias: str) -> tuple[list[str], dict[str, Any]]:
        """Predicates (on `alias`) selecting the rows this write replaces."""
        t = self.t
        parts: list[str] = []
        params: dict[str, Any] = {}
        if t.mode is WriteMode.TRUNCATE:
            return parts, params
        if t.org_column:
            parts.append(f"{self._q('org_slug', alias)} = @org_slug")
            params["org_slug"] = t.org_slug
        if t.mode is WriteMode.RANGE_REPLACE:
            assert t.date_range is not None and t.date_column is not None
            start, end = t.date_range
            column = self._q(t.date_column, alias)
            if t.date_type == "DATE":
                parts.append(f"{column} BETWEEN @range_start AND @range_end")
                params.update(range_start=start, range_end=end)
            else:  # half-open on timestamps: [start 00:00, end+1 00:00)
                low = datetime.combine(start, datetime.min.time())
                high = datetime.combine(end + timedelta(days=1), datetime.min.time())
                if t.date_type == "TIMESTAMP":
                    low, high = low.replace(tzinfo=UTC), high.replace(tzinfo=UTC)
                parts.append(f"{column} >= @range_start AND {column} < @range_end")
                params.update(range_start=Typed(t.date_type or "TIMESTAMP", low),
                              range_end=Typed(t.date_type or "TIMESTAMP", high))
        return parts, params

    def delete(self) -> tuple[str, dict[str, Any]]:
        parts, params = self._scope("T")
        where = " AND ".join(parts) or "TRUE"
        return f"DELETE FROM {self.t.ref} AS T WHERE {where}", params  # noqa: S608 - validated names

    def merge_from(self, staging_ref: str) -> tuple[str, dict[str, Any]]:
        t = self.t
        columns = t.columns
        cols = ", ".join(self._q(c) for c in columns)
        values = ", ".join(self._q(c, "S") for c in columns)
        insert = f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})"  # noqa: S608 - validated names
        if t.mode is not WriteMode.MERGE:
            parts, params = self._scope("T")
            condition = f" AND {' AND '.join(parts)}" if parts else ""
            sql = (f"MERGE {t.ref} AS T USING (SELECT {cols} FROM {staging_ref}) AS S ON FALSE "  # noqa: S608
                   f"WHEN NOT MATCHED BY SOURCE{condition} THEN DELETE {insert}")
            return sql, params
        keys = ", ".join(self._q(k) for k in t.keys)
        source = (f"SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {keys} "  # noqa: S608
                  f"ORDER BY `{_SEQ}` DESC) AS `_cv_rn` FROM {staging_ref}) WHERE `_cv_rn` = 1")
        on = [f"{self._q(k, 'T')} = {self._q(k, 'S')}" for k in t.keys]
        params = {}
        if t.org_column and "org_slug" not in t.keys:
            on.insert(0, f"{self._q('org_slug', 'T')} = @org_slug")  # never match another org's row
            params["org_slug"] = t.org_slug
        updates = ", ".join(f"{self._q(c)} = {self._q(c, 'S')}" for c in columns if c not in t.keys)
        matched = f"WHEN MATCHED THEN UPDATE SET {updates} " if updates else ""
        sql = f"MERGE {t.ref} AS T USING ({source}) AS S ON {' AND '.join(on)} {matched}{insert}"
        return sql, params
