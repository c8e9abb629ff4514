"""Run and step logs: org_meta_pipeline_runs and org_meta_step_logs.

Design: rows are append-only state events, never updated. An attempt writes a RUNNING row when it starts
and, when it ends, ONE insert of all its step rows plus ONE insert of its final row (SUCCESS, FAILED,
TIMEOUT). A rejected request writes one REJECTED row; a dead-lettered one a FAILED row with error code
DEAD_LETTERED. So a run of any number of steps costs at most 3 BigQuery calls for logging; with
`write=False` rows are only staged, and the consumer's group commit writes the staged rows of all its
concurrent runs with `flush()`: one insert per table for many runs. Step rows always go before run rows,
and a final run row never goes while its step rows could not be written.

Why not UPDATE the RUNNING row: rows inserted by streaming cannot be changed by DML for a while on real
BigQuery, and DML per state change would cost one job each. The current state of a run is its latest
row: highest attempt, then state rank (RUNNING 0 < final 1 < dead-lettered 2), then event time; queries
take it with ROW_NUMBER() / ORDER BY ... LIMIT 1, so a duplicate row (insert ids are only de-duplicated
best-effort, and not at all by the emulator) never changes an answer.

Writing never raises: a failed insert keeps its rows (bounded) and they ride along with the next insert
to the same table, or go out with `flush()`/`close()` at shutdown; `flush()` says whether everything went
(the consumer nacks the runs of a commit that did not). Reads use query parameters only.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import structlog
from google.cloud import bigquery

from convergence.observability import metrics
from convergence.pipeline.errors import ErrorCode
from convergence.pipeline.results import PipelineResult, RunStatus, StepResult, StepStatus
from convergence.schemas.errors import UNKNOWN_ORG
from convergence.settings import Settings
from convergence.warehouse.client import call_retry
from convergence.warehouse.identifiers import InvalidIdentifier, validate_dataset, validate_org_slug
from convergence.warehouse.query import QueryRunner

log = structlog.get_logger(__name__)

RUNS_TABLE = "org_meta_pipeline_runs"
STEPS_TABLE = "org_meta_step_logs"
DEAD_LETTERED = ErrorCode.DEAD_LETTERED
_NAMESPACE = uuid.UUID("6f1c1f0e-5a43-4d0c-9a51-3c0b7b1e2a10")
_RANK_RUNNING, _RANK_FINAL, _RANK_DEAD = 0, 1, 2
_MAX_MESSAGE = 4000
_MAX_JSON = 20_000
# Rows per insertAll request (BigQuery's advice: about 500; hard limits 50,000 rows / 10 MB).
_MAX_INSERT_ROWS = 500


@dataclass(frozen=True)
class RunRecord:
    pipeline_logging_id: str
    org_slug: str
    run_id: str
    status: str
    pipeline_id: str | None = None
    pipeline: str | None = None
    trigger: str | None = None
    attempt: int | None = None
    state_rank: int = 0
    parameters: dict[str, Any] | None = None
    trace_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_ms: int | None = None
    rows_processed: int | None = None
    steps_total: int | None = None
    steps_failed: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    delivery_count: int | None = None
    request_json: str | None = None
    event_time: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RunRecord:
        values: dict[str, Any] = {f.name: row.get(f.name) for f in fields(cls)}
        values["parameters"] = _loads(values["parameters"])
        return cls(**values)


@dataclass(frozen=True)
class StepRecord:
    step_logging_id: str
    pipeline_logging_id: str
    org_slug: str
    run_id: str
    step_id: str
    status: str
    pipeline_id: str | None = None
    attempt: int | None = None
    ps_type: str | None = None
    step_index: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_ms: int | None = None
    rows_processed: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    result_json: str | None = None
    event_time: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StepRecord:
        values: dict[str, Any] = {f.name: row.get(f.name) for f in fields(cls)}
        return cls(**values)


_RUN_COLUMNS = ", ".join(f"`{f.name}`" for f in fields(RunRecord))
_STEP_COLUMNS = ", ".join(f"`{f.name}`" for f in fields(StepRecord))
# A success is final whatever came after it (a late duplicate's rows); otherwise the newest state wins
# (event_time is set when the state happens, not when the row is written), so a replay after a dead
# letter shows the replay's outcome.
_LATEST_FIRST = "(`status` = 'SUCCESS') DESC, `event_time` DESC, `state_rank` DESC"


def pipeline_logging_id(run_id: str, attempt: int | str) -> str:
    """Deterministic id of one attempt: the start and end rows agree without sharing memory."""
    return str(uuid.uuid5(_NAMESPACE, f"{run_id}/{attempt}"))


def _loads(value: Any) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    text = json.dumps(value, default=str, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= _MAX_JSON else json.dumps({"truncated": True, "size": len(text)})


def _text(value: Any, limit: int = _MAX_MESSAGE) -> str | None:
    if value is None:
        return None
    text = str(getattr(value, "value", value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _insert_id(key: str) -> str:
    """insertIds are limited in length: a digest of the row's identity (same row, same id)."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def _org(value: Any) -> str:
    """Writes never fail on a bad slug (a rejected request may carry anything): it is logged as unknown."""
    try:
        return validate_org_slug(value)
    except InvalidIdentifier:
        return UNKNOWN_ORG


class RunLog:
    def __init__(self, client: bigquery.Client, settings: Settings, *, max_pending_rows: int = 10_000):
        self.client = client
        self.settings = settings
        dataset = validate_dataset(settings.central_dataset)
        self.runs_table = f"{client.project}.{dataset}.{RUNS_TABLE}"
        self.steps_table = f"{client.project}.{dataset}.{STEPS_TABLE}"
        self.max_pending_rows = max_pending_rows
        self._queries = metrics.count_query_calls(QueryRunner(client, settings), "runlog")
        self._lock = threading.Lock()
        self._pending: dict[str, list[tuple[str, dict[str, Any]]]] = {self.runs_table: [], self.steps_table: []}
        self._insert_calls = 0

    @property
    def calls(self) -> int:
        """BigQuery calls made so far (inserts and queries)."""
        return self._insert_calls + self._queries.calls

    # -- writing -----------------------------------------------------------------------------------------
    def run_started(self, *, run_id: str, org_slug: str, pipeline_id: str | None = None,
                    pipeline: str | None = None, trigger: Any = None, attempt: int = 1,
                    parameters: Mapping[str, Any] | None = None, trace_id: str | None = None,
                    started_at: datetime | None = None, write: bool = True) -> str:
        plog = pipeline_logging_id(run_id, attempt)
        now = datetime.now(UTC)
        row = self._run_row(plog, run_id, org_slug, RunStatus.RUNNING.value, _RANK_RUNNING, attempt=attempt,
                            pipeline_id=pipeline_id, pipeline=pipeline, trigger=trigger, parameters=parameters,
                            trace_id=trace_id, start_time=started_at or now, event_time=now)
        self._stage_or_insert(self.runs_table, [(f"{plog}:RUNNING", row)], write)
        return plog

    def run_finished(self, result: PipelineResult, *, pipeline: str | None = None, trigger: Any = None,
                     attempt: int = 1, parameters: Mapping[str, Any] | None = None,
                     trace_id: str | None = None, write: bool = True) -> None:
        plog = pipeline_logging_id(result.run_id, attempt)
        steps = [(f"{plog}:{s.step_id}",
                  self._step_row(plog, result.run_id, result.org_slug, attempt, result.pipeline_id, s, index))
                 for index, s in enumerate(result.steps)]
        failed = sum(1 for s in result.steps if s.status in (StepStatus.FAILED, StepStatus.TIMEOUT))
        row = self._run_row(
            plog, result.run_id, result.org_slug, result.status.value, _RANK_FINAL, attempt=attempt,
            pipeline_id=result.pipeline_id, pipeline=pipeline, trigger=trigger, parameters=parameters,
            trace_id=trace_id, start_time=result.started_at, end_time=result.ended_at,
            duration_ms=result.duration_ms, rows_processed=result.rows_processed, steps_total=len(result.steps),
            steps_failed=failed, error_code=result.error.code if result.error else None,
            error_message=result.error.message if result.error else None, event_time=datetime.now(UTC))
        final = [(f"{plog}:{result.status.value}", row)]
        if not write:
            self._stage_or_insert(self.steps_table, steps, write=False)
            self._stage_or_insert(self.runs_table, final, write=False)
        elif not steps or self._insert(self.steps_table, steps):
            self._insert(self.runs_table, final)
        else:  # the final row waits for its steps' rows (see flush)
            self._stage_or_insert(self.runs_table, final, write=False)

    def record_rejected(self, *, run_id: str, org_slug: str, code: str, message: str,
                        pipeline: str | None = None, trigger: Any = None, attempt: int | None = None,
                        parameters: Mapping[str, Any] | None = None, trace_id: str | None = None,
                        write: bool = True) -> None:
        now = datetime.now(UTC)
        plog = pipeline_logging_id(run_id, attempt or 0)
        row = self._run_row(plog, run_id, org_slug, RunStatus.REJECTED.value, _RANK_FINAL, attempt=attempt,
                            pipeline=pipeline, trigger=trigger, parameters=parameters, trace_id=trace_id,
                            start_time=now, end_time=now, duration_ms=0, error_code=code, error_message=message,
                            event_time=now)
        self._stage_or_insert(self.runs_table, [(f"{plog}:REJECTED:{code}", row)], write)

    def record_dead_lettered(self, *, run_id: str, org_slug: str, delivery_count: int | None, message: str,
                             pipeline: str | None = None, trigger: Any = None,
                             parameters: Mapping[str, Any] | None = None, trace_id: str | None = None,
                             request_json: str | None = None) -> None:
        now = datetime.now(UTC)
        plog = pipeline_logging_id(run_id, "dead-letter")
        row = self._run_row(plog, run_id, org_slug, RunStatus.FAILED.value, _RANK_DEAD, attempt=delivery_count,
                            pipeline=pipeline, trigger=trigger, parameters=parameters, trace_id=trace_id,
                            end_time=now, error_code=DEAD_LETTERED, error_message=message,
                            delivery_count=delivery_count, request_json=_text(request_json, _MAX_JSON),
                            event_time=now)
        self._insert(self.runs_table, [(f"{plog}:DEAD_LETTERED", row)])

    def flush(self) -> bool:
        """Write whatever is pending (staged rows, failed inserts). True if all went.

        Takes one snapshot of both tables' rows, then writes step rows first and run rows only after them:
        a final run row (SUCCESS) is what makes a redelivery a duplicate, so it must never be written while
        its steps' rows are missing. Concurrent flushes are safe (each writes its own snapshot)."""
        with self._lock:
            steps = self._pending[self.steps_table]
            runs = self._pending[self.runs_table]
            self._pending[self.steps_table], self._pending[self.runs_table] = [], []
        if steps and not self._write(self.steps_table, steps):
            if runs:
                self._keep(self.runs_table, runs, "waiting for their steps' rows")
            return False
        return not runs or self._write(self.runs_table, runs)

    def close(self) -> None:
        if not self.flush():
            with self._lock:
                lost = sum(len(rows) for rows in self._pending.values())
            log.error("run log rows could not be written at shutdown", rows=lost)

    # -- reading -----------------------------------------------------------------------------------------
    def latest_run(self, run_id: str, org_slug: str | None = None) -> RunRecord | None:
        where, params = self._where(run_id=run_id, org_slug=org_slug)
        rows = self._queries.rows(
            f"SELECT {_RUN_COLUMNS} FROM `{self.runs_table}` WHERE {where} "  # noqa: S608 - fixed names
            f"ORDER BY {_LATEST_FIRST} LIMIT 1", params)
        return RunRecord.from_row(rows[0]) if rows else None

    def succeeded_among(self, runs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (org_slug, run_id) pairs already succeeded: one query for a whole batch.
        Rows only count for their own org: a run_id another org used means nothing here."""
        wanted = set()
        for org, run_id in runs:
            try:
                wanted.add((validate_org_slug(org), str(run_id)))
            except InvalidIdentifier:
                continue  # a bad slug never ran
        if not wanted:
            return set()
        rows = self._queries.rows(
            f"SELECT DISTINCT `org_slug`, `run_id` FROM `{self.runs_table}` "  # noqa: S608 - fixed names
            "WHERE `org_slug` IN UNNEST(@orgs) AND `run_id` IN UNNEST(@run_ids) AND `status` = @success",
            {"orgs": sorted({org for org, _ in wanted}), "run_ids": sorted({run for _, run in wanted}),
             "success": RunStatus.SUCCESS.value})
        return {(row["org_slug"], row["run_id"]) for row in rows} & wanted

    def has_succeeded(self, run_id: str, org_slug: str | None = None) -> bool:
        where, params = self._where(run_id=run_id, org_slug=org_slug)
        params["success"] = RunStatus.SUCCESS.value
        rows = self._queries.rows(
            f"SELECT `run_id` FROM `{self.runs_table}` WHERE {where} AND `status` = @success LIMIT 1",  # noqa: S608
            params)
        return bool(rows)

    def list_runs(self, org_slug: str | None = None, status: str | None = None, since: datetime | None = None,
                  limit: int = 100, pipeline: str | None = None, error_code: str | None = None) -> list[RunRecord]:
        """Runs in their latest state, newest first; `error_code` filters on the latest state's code (a
        dead-lettered run is FAILED with DEAD_LETTERED)."""
        if not 1 <= int(limit) <= 10_000:
            raise ValueError("limit must be between 1 and 10000")
        where, params = self._where(org_slug=org_slug)
        if since is not None:
            where += " AND `event_time` >= @since"
            params["since"] = since if since.tzinfo else since.replace(tzinfo=UTC)
        if pipeline is not None:
            where += " AND `pipeline` = @pipeline"
            params["pipeline"] = str(pipeline)
        outer = ""
        if status is not None:
            outer = " AND `status` = @status"
            params["status"] = RunStatus(status).value
        if error_code is not None:
            outer += " AND `error_code` = @error_code"
            params["error_code"] = str(error_code)
        rows = self._queries.rows(
            f"SELECT {_RUN_COLUMNS} FROM (SELECT {_RUN_COLUMNS}, ROW_NUMBER() OVER ("  # noqa: S608
            f"PARTITION BY `org_slug`, `run_id` ORDER BY {_LATEST_FIRST}) AS `_rn` FROM `{self.runs_table}` "
            f"WHERE {where}) WHERE `_rn` = 1{outer} "
            f"ORDER BY COALESCE(`start_time`, `event_time`) DESC LIMIT {int(limit)}", params)
        return [RunRecord.from_row(row) for row in rows]

    def step_logs(self, run_id: str, org_slug: str) -> list[StepRecord]:
        where, params = self._where(run_id=run_id, org_slug=org_slug)
        rows = self._queries.rows(
            f"SELECT {_STEP_COLUMNS} FROM (SELECT {_STEP_COLUMNS}, ROW_NUMBER() OVER ("  # noqa: S608
            "PARTITION BY `step_logging_id` ORDER BY `event_time` DESC) AS `_rn` "
            f"FROM `{self.steps_table}` WHERE {where}) WHERE `_rn` = 1 "
            "ORDER BY COALESCE(`attempt`, 0), COALESCE(`step_index`, 0)", params)
        return [StepRecord.from_row(row) for row in rows]

    @staticmethod
    def _where(run_id: str | None = None, org_slug: str | None = None) -> tuple[str, dict[str, Any]]:
        parts: list[str] = []
        params: dict[str, Any] = {}
        if org_slug is not None:
            parts.append("`org_slug` = @org_slug")
            params["org_slug"] = validate_org_slug(org_slug)
        if run_id is not None:
            parts.append("`run_id` = @run_id")
            params["run_id"] = str(run_id)
        return " AND ".join(parts) or "TRUE", params

    # -- rows --------------------------------------------------------------------------------------------
    @staticmethod
    def _run_row(plog: str, run_id: str, org_slug: str, status: str, rank: int, *, attempt: int | None,
                 pipeline_id: str | None = None, pipeline: str | None = None, trigger: Any = None,
                 parameters: Mapping[str, Any] | None = None, trace_id: str | None = None,
                 start_time: datetime | None = None, end_time: datetime | None = None,
                 duration_ms: int | None = None, rows_processed: int | None = None, steps_total: int | None = None,
                 steps_failed: int | None = None, error_code: str | None = None, error_message: str | None = None,
                 delivery_count: int | None = None, request_json: str | None = None,
                 event_time: datetime) -> dict[str, Any]:
        return {
            "pipeline_logging_id": plog, "org_slug": _org(org_slug), "run_id": _text(run_id, 200),
            "pipeline_id": _text(pipeline_id, 300), "pipeline": _text(pipeline, 300), "trigger": _text(trigger, 50),
            "attempt": attempt, "status": status, "state_rank": rank,
            "parameters": _dumps(dict(parameters)) if parameters is not None else None,
            "trace_id": _text(trace_id, 200), "start_time": _iso(start_time), "end_time": _iso(end_time),
            "duration_ms": duration_ms, "rows_processed": rows_processed, "steps_total": steps_total,
            "steps_failed": steps_failed, "error_code": _text(error_code, 100),
            "error_message": _text(error_message), "delivery_count": delivery_count, "request_json": request_json,
            "event_time": _iso(event_time),
        }

    @staticmethod
    def _step_row(plog: str, run_id: str, org_slug: str, attempt: int, pipeline_id: str | None,
                  result: StepResult, index: int | None) -> dict[str, Any]:
        scalars = {k: v for k, v in result.result.items() if isinstance(v, str | int | float | bool)}
        return {
            "step_logging_id": str(uuid.uuid5(_NAMESPACE, f"{plog}/{result.step_id}")),
            "pipeline_logging_id": plog, "org_slug": _org(org_slug), "run_id": _text(run_id, 200),
            "pipeline_id": _text(pipeline_id, 300), "attempt": attempt, "step_id": _text(result.step_id, 200),
            "ps_type": _text(result.ps_type, 200), "step_index": index, "status": result.status.value,
            "start_time": _iso(result.started_at), "end_time": _iso(result.ended_at),
            "duration_ms": result.duration_ms, "rows_processed": result.rows_processed,
            "error_code": _text(result.error.code, 100) if result.error else None,
            "error_message": _text(result.error.message) if result.error else None,
            "result_json": _dumps(scalars) if scalars else None, "event_time": _iso(datetime.now(UTC)),
        }

    # -- inserting ---------------------------------------------------------------------------------------
    def _stage_or_insert(self, table: str, items: list[tuple[str, dict[str, Any]]], write: bool) -> None:
        """write=False: the rows wait for the next insert to their table or `flush()` (the consumer's group
        commit writes the rows of all concurrent runs together)."""
        if write:
            self._insert(table, items)
            return
        with self._lock:
            self._pending[table].extend(items)

    def _insert(self, table: str, items: list[tuple[str, dict[str, Any]]]) -> bool:
        """Streaming insert of `items` plus anything pending for `table`; on failure they stay pending."""
        with self._lock:
            batch = self._pending[table] + items
            self._pending[table] = []
        return self._write(table, batch)

    def _write(self, table: str, batch: list[tuple[str, dict[str, Any]]]) -> bool:
        ok = True
        for start in range(0, len(batch), _MAX_INSERT_ROWS):  # group commits can gather many runs' rows
            ok = self._insert_chunk(table, batch[start:start + _MAX_INSERT_ROWS]) and ok
        return ok

    def _insert_chunk(self, table: str, batch: list[tuple[str, dict[str, Any]]]) -> bool:
        with self._lock:
            self._insert_calls += 1
        metrics.bigquery_calls("runlog")
        metrics.bigquery_bytes("runlog", metrics.json_rows_bytes(row for _, row in batch))
        try:
            errors = self.client.insert_rows_json(table, [row for _, row in batch],
                                                  row_ids=[_insert_id(key) for key, _ in batch],
                                                  retry=call_retry(self.settings))
        except Exception as error:  # noqa: BLE001 - logging must not fail a run; the rows stay pending
            self._keep(table, batch, f"{type(error).__name__}: {error}")
            return False
        if errors:
            # Rows BigQuery refused as invalid would be refused again: report and drop them, keep the rest.
            refused = {int(e["index"]) for e in errors if any(x.get("reason") == "invalid" for x in e["errors"])}
            log.error("run log rows refused", table=table, rows=len(refused), errors=str(errors[:3])[:500])
            retry = [item for i, item in enumerate(batch) if i not in refused and any(
                int(e["index"]) == i for e in errors)]
            if retry:
                self._keep(table, retry, "rows stopped by other rows' errors")
            return not retry  # refused rows are reported above; retrying them cannot help
        return True

    def _keep(self, table: str, batch: list[tuple[str, dict[str, Any]]], reason: str) -> None:
        with self._lock:
            kept = (batch + self._pending[table])[-self.max_pending_rows:]
            dropped = len(batch) + len(self._pending[table]) - len(kept)
            self._pending[table] = kept
        log.warning("run log insert failed; rows kept for the next write", table=table, rows=len(kept),
                    dropped=dropped, reason=reason[:300])
