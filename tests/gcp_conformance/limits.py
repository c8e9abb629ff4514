"""BigQuery's published quotas and limits, enforced over the client in tests (bqemulator enforces none).

Numbers are from Google's BigQuery "Quotas and limits" page and the DML page ("Transform data with data
manipulation language"), as read on 2026-12-02:
- UPDATE, DELETE and MERGE (mutating DML) per table: 2 run concurrently, up to 20 more are queued; past
  that BigQuery fails the statement.
- Table modifications per table per day: 1,500 (load, copy and query jobs that write a destination table).
  DML statements and metadata updates do not count ("Optimize load jobs" page, "Table operations that
  don't count toward the quota"); DML has its own concurrency limit below.
- Table metadata update operations per table: 5 per 10 seconds (tables.insert/patch/update, DDL, and job
  output: load, copy and query jobs writing the table).
- Rows written by `tabledata.insertAll` within the last 30 minutes cannot be modified by UPDATE, DELETE,
  MERGE (its update/delete branches) or TRUNCATE ("would affect rows in the streaming buffer").
- Unresolved GoogleSQL query length: 1,024 KB. Query parameters per query: 10,000.
- API request size: 10 MB. insertAll: 10 MB per request, 10 MB per row, 50,000 rows per request.

State is shared by every process of the test session through files in the recording directory, so N
consumer processes count against the same table, as on BigQuery. A violation raises in the process that
caused it (failing the test) and is written down, so the session fails naming the test even when the
violation happened in a child process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.gcp_conformance import recorder

MUTATING_DML_RUNNING = 2
MUTATING_DML_QUEUED = 20
TABLE_MODIFICATIONS_PER_DAY = 1_500
METADATA_UPDATES_PER_WINDOW, METADATA_WINDOW_SECONDS = 5, 10.0
STREAMING_BUFFER_SECONDS = 30 * 60
QUERY_LENGTH_CHARS = 1_024 * 1_024
QUERY_PARAMETERS = 10_000
REQUEST_BYTES = 10 * 1_024 * 1_024
INSERT_ALL_ROWS = 50_000
ROW_BYTES = 10 * 1_024 * 1_024
# A DML job seen started but never seen finished (a killed process) stops counting after this long.
_DML_STALE_SECONDS = 120.0


class BigQueryLimitExceeded(AssertionError):
    """A call that real BigQuery would refuse for one of its published limits."""


@dataclass(frozen=True)
class TargetedStatement:
    kind: str  # UPDATE, DELETE, MERGE, TRUNCATE, INSERT, DDL
    table_id: str
    mutates_existing_rows: bool


_NAME = r"`?([A-Za-z0-9_.\-]+)`?"
_DML = re.compile(
    r"^\s*(?:(UPDATE)\s+" + _NAME + r"|(DELETE)\s+(?:FROM\s+)?" + _NAME + r"|(MERGE)\s+(?:INTO\s+)?" + _NAME +
    r"|(TRUNCATE)\s+TABLE\s+" + _NAME + r"|(INSERT)\s+(?:INTO\s+)?" + _NAME +
    r"|(CREATE|ALTER|DROP)\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?TABLE\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?"
    + _NAME + r")", re.IGNORECASE)
_MERGE_MUTATES = re.compile(r"WHEN\s+(?:NOT\s+MATCHED\s+BY\s+SOURCE|MATCHED)\b[^;]*?\bTHEN\s+(?:UPDATE|DELETE)",
                            re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


def targeted_statements(sql: str, project: str, default_dataset: str | None) -> list[TargetedStatement]:
    """The tables a statement (or each statement of a script) writes, with what it does to them."""
    out = []
    for part in _COMMENT.sub(" ", sql).split(";"):
        match = _DML.match(part)
        if not match:
            continue
        groups = [g for g in match.groups() if g is not None]
        kind, name = groups[0].upper(), groups[1]
        if kind in ("CREATE", "ALTER", "DROP"):
            if re.search(r"\bTEMP(ORARY)?\s+TABLE", part, re.IGNORECASE):
                continue
            kind = "DDL"
        table_id = _qualify(name, project, default_dataset)
        if table_id is None:
            continue
        mutates = kind in ("UPDATE", "DELETE", "TRUNCATE") or (kind == "MERGE" and bool(_MERGE_MUTATES.search(part)))
        out.append(TargetedStatement(kind, table_id, mutates))
    return out


def _qualify(name: str, project: str, default_dataset: str | None) -> str | None:
    parts = name.split(".")
    if len(parts) == 3:
        return name
    if len(parts) == 2:
        return f"{project}.{name}"
    if default_dataset:
        return f"{default_dataset}.{name}"
    return None


class Limits:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        for sub in ("dml", "modifications", "metadata", "streamed"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._running: dict[str, tuple[str, list[str]]] = {}  # job id -> (slot file name, tables holding a slot)

    # ---- shared state ----

    @staticmethod
    def _key(table_id: str) -> str:
        return quote(table_id, safe="")

    def _append(self, sub: str, table_id: str, payload: str) -> list[str]:
        path = self.dir / sub / self._key(table_id)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (payload + "\n").encode())
        finally:
            os.close(fd)
        return path.read_text().splitlines()

    def _violation(self, limit: str, number: str, detail: str) -> None:
        message = f"BigQuery limit exceeded: {limit} ({number}): {detail}"
        recorder._write({"kind": "limit_violation", "limit": limit, "number": number, "detail": detail})
        raise BigQueryLimitExceeded(message)

    # ---- checks ----

    def before(self, method: str, path: str, data: Mapping[str, Any] | None) -> None:
        if data is None:
            return
        size = len(json.dumps(data, default=str))
        if size > REQUEST_BYTES:
            self._violation("API request size", "10 MB", f"{method} {path} is {size:,} bytes")
        project = path.split("/")[2] if path.startswith("/projects/") else ""
        if path.endswith("/insertAll"):
            self._insert_all(path, data)
        elif path.endswith("/queries") and method == "POST":
            self._query(project, data.get("query", ""), data.get("queryParameters"), data.get("defaultDataset"),
                        job_id=(data.get("requestId") or ""), dry_run=bool(data.get("dryRun")))
        elif path.endswith("/jobs") and method == "POST":
            configuration = data.get("configuration") or {}
            job_id = (data.get("jobReference") or {}).get("jobId", "")
            dry_run = bool(configuration.get("dryRun"))
            if "query" in configuration:
                query = configuration["query"]
                self._query(project, query.get("query", ""), query.get("queryParameters"),
                            query.get("defaultDataset"), job_id=job_id, dry_run=dry_run)
                if query.get("destinationTable") and not dry_run:
                    self._job_output(_table_of(query["destinationTable"]), "query job")
            for kind in ("load", "copy"):
                if kind in configuration and not dry_run:
                    self._job_output(_table_of(configuration[kind].get("destinationTable") or {}), f"{kind} job")
        elif "/tables" in path and method in ("POST", "PUT", "PATCH"):
            table = _table_of(data.get("tableReference") or {}) or _table_from_path(path)
            if table:
                self._metadata_update(table, f"tables {method}")

    def after(self, method: str, path: str, data: Mapping[str, Any] | None, response: Any) -> None:
        """Releases a DML slot once its job is seen done, or its call failed."""
        if not isinstance(response, Mapping):
            return
        request = data if isinstance(data, Mapping) else {}
        request_id = (request.get("jobReference") or {}).get("jobId") or request.get("requestId")
        job_id = (response.get("jobReference") or {}).get("jobId")
        done = response.get("jobComplete") is True or (response.get("status") or {}).get("state") == "DONE" \
            or "_error" in response
        with self._lock:
            if request_id and request_id in self._running and job_id and job_id != request_id:
                self._running[job_id] = self._running.pop(request_id)  # jobs.query: the server names the job
            slot = self._running.pop(job_id or request_id or "", None) if done else None
        if slot is None:
            return
        name, tables = slot
        for table in tables:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / "dml" / self._key(table) / name).unlink()

    def _query(self, project: str, sql: str, parameters: Any, default_dataset: Any, job_id: str,
               dry_run: bool) -> None:
        if len(sql) > QUERY_LENGTH_CHARS:
            self._violation("maximum unresolved GoogleSQL query length", "1,024 KB", f"{len(sql):,} characters")
        if len(parameters or []) > QUERY_PARAMETERS:
            self._violation("query parameters per query", "10,000", f"{len(parameters):,} parameters")
        if dry_run:
            return
        dataset = None
        if default_dataset and default_dataset.get("datasetId"):
            dataset = f"{default_dataset.get('projectId') or project}.{default_dataset['datasetId']}"
        for statement in targeted_statements(sql, project, dataset):
            if statement.kind == "DDL":
                self._metadata_update(statement.table_id, "DDL")
                continue
            if statement.mutates_existing_rows:
                self._streaming_buffer(statement)
            if statement.kind in ("UPDATE", "DELETE", "MERGE"):
                self._dml_slot(statement.table_id, job_id or f"anon-{time.monotonic_ns()}")

    def _insert_all(self, path: str, data: Mapping[str, Any]) -> None:
        rows = data.get("rows") or []
        if len(rows) > INSERT_ALL_ROWS:
            self._violation("insertAll rows per request", "50,000", f"{len(rows):,} rows")
        for row in rows:
            size = len(json.dumps(row.get("json"), default=str))
            if size > ROW_BYTES:
                self._violation("insertAll row size", "10 MB", f"a row of {size:,} bytes")
        table = _table_from_path(path)
        if table and rows:
            (self.dir / "streamed" / self._key(table)).touch()

    def _streaming_buffer(self, statement: TargetedStatement) -> None:
        marker = self.dir / "streamed" / self._key(statement.table_id)
        if marker.exists() and time.time() - marker.stat().st_mtime < STREAMING_BUFFER_SECONDS:
            self._violation("DML over rows in the streaming buffer",
                            "rows streamed by insertAll in the last 30 minutes",
                            f"{statement.kind} on {statement.table_id}, which received insertAll rows "
                            f"{time.time() - marker.stat().st_mtime:.0f} s ago")

    def _modification(self, table: str, what: str) -> None:
        count = len(self._append("modifications", table, what))
        if count > TABLE_MODIFICATIONS_PER_DAY:
            self._violation("table modifications per table per day", "1,500", f"{count:,} on {table}")

    def _job_output(self, table: str | None, what: str) -> None:
        if table:
            self._modification(table, what)
            self._metadata_update(table, what)

    def _metadata_update(self, table: str, what: str) -> None:
        now = time.time()
        lines = self._append("metadata", table, f"{now:.6f} {what}")
        recent = [line for line in lines if now - float(line.split(" ", 1)[0]) < METADATA_WINDOW_SECONDS]
        if len(recent) > METADATA_UPDATES_PER_WINDOW:
            self._violation("table metadata update operations per table", "5 per 10 seconds",
                            f"{len(recent)} on {table} within 10 s: " + ", ".join(r.split(" ", 1)[1] for r in recent))

    def _dml_slot(self, table: str, job_id: str) -> None:
        folder = self.dir / "dml" / self._key(table)
        folder.mkdir(exist_ok=True)
        now = time.time()
        in_flight = [p for p in folder.iterdir() if now - p.stat().st_mtime < _DML_STALE_SECONDS]
        if len(in_flight) >= MUTATING_DML_RUNNING + MUTATING_DML_QUEUED:
            self._violation("mutating DML statements per table", "2 running and 20 queued",
                            f"{len(in_flight) + 1} UPDATE/DELETE/MERGE in flight on {table}")
        name = f"{os.getpid()}-{job_id}"
        (folder / name).touch()
        with self._lock:
            self._running.setdefault(job_id, (name, []))[1].append(table)


def _table_of(ref: Mapping[str, Any]) -> str | None:
    if ref and ref.get("tableId"):
        return f"{ref.get('projectId')}.{ref.get('datasetId')}.{ref['tableId']}"
    return None


def _table_from_path(path: str) -> str | None:
    match = re.search(r"/projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)", path)
    return ".".join(match.groups()) if match else None


_enabled: Limits | None = None


def enable() -> Limits | None:
    """Turns the strict layer on in this process (once), sharing state through the recording directory."""
    global _enabled
    directory = os.environ.get(recorder.RECORD_DIR_ENV)
    if _enabled is not None or not directory:
        return _enabled
    limits = Limits(Path(directory) / "limits")

    def observer(method: str, path: str, data: Any, response: Any, after: bool) -> None:
        if after:
            limits.after(method, path, data, response)
        else:
            limits.before(method, path, data)

    recorder.add_observer(observer)
    limits.observer = observer  # type: ignore[attr-defined]
    _enabled = limits
    return limits


def disable() -> None:
    global _enabled
    if _enabled is not None:
        recorder._observers.remove(_enabled.observer)  # type: ignore[attr-defined]
        _enabled = None
