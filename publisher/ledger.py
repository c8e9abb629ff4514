"""What was published: one row per run request in org_pipeline_execution_queue,
keyed by run_id.

The scheduler's fan-out asks it which deterministic run_ids of a tick already went out (a redelivered or
duplicated tick then publishes nothing new), and the HTTP door records what it queued so that
`GET /api/v1/pipelines/runs/{run_id}` can answer QUEUED before the consumer has written anything.

Rows are streamed (insert_rows_json, insert id = run_id): they are never updated, and streaming 10,000
rows is one call. Insert ids are de-duplicated only best-effort (and not at all by the emulator), so
readers ask `SELECT DISTINCT run_id ... WHERE run_id IN UNNEST(@run_ids)`: a duplicate row never
changes an answer. Reads are parameterized; a lower bound on `scheduled_time` (the partition column)
keeps the scan to the days concerned on real BigQuery.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from convergence.schemas import RunRequest
from convergence.settings import Settings
from convergence.warehouse.client import call_retry
from convergence.warehouse.identifiers import table_id, table_ref, validate_dataset, validate_org_slug
from convergence.warehouse.query import QueryRunner

log = structlog.get_logger(__name__)

TABLE = "org_pipeline_execution_queue"
STATUS_PENDING = "PENDING"  # published to the requests topic, not yet picked up (the consumer logs the rest)
INSERT_CHUNK = 5000  # rows per streaming insert (~1.5 MB)
LOOKUP_CHUNK = 10_000  # run ids per query parameter array
# The window a run_id is looked up in, before its slot: slots of one tick are at most a window apart.
LOOKBACK = timedelta(days=2)


class LedgerError(RuntimeError):
    """Rows could not be written: the caller must not consider the requests recorded."""


class ExecutionLedger:
    def __init__(self, client: Any, settings: Settings):
        self.client = client
        self.settings = settings
        dataset = validate_dataset(settings.central_dataset)
        self.table = table_id(client.project, dataset, TABLE)
        self.ref = table_ref(client.project, dataset, TABLE)
        self.queries = QueryRunner(client, settings)
        self.inserts = 0

    @property
    def calls(self) -> int:
        return self.queries.calls + self.inserts

    # -- fan-out protocol ----------------------------------------------------------------------------
    def already_published(self, run_ids: Sequence[str], since: datetime | None = None) -> set[str]:
        """The run_ids among these that have a row (scheduled at or after `since`, when given)."""
        found: set[str] = set()
        ids = sorted(set(run_ids))
        for start in range(0, len(ids), LOOKUP_CHUNK):
            params: dict[str, Any] = {"run_ids": ids[start:start + LOOKUP_CHUNK]}
            where = "`run_id` IN UNNEST(@run_ids)"
            if since is not None:
                where += " AND `scheduled_time` >= @since"
                params["since"] = _aware(since)
            rows = self.queries.rows(f"SELECT DISTINCT `run_id` FROM {self.ref} WHERE {where}", params)  # noqa: S608
            found.update(str(row["run_id"]) for row in rows)
        return found

    def record(self, requests: Sequence[RunRequest], slots: Mapping[str, datetime] | None = None) -> None:
        """One PENDING row per request; `slots` gives each run's scheduled time (default: now)."""
        now = datetime.now(UTC)
        slots = slots or {}
        rows = []
        for request in requests:
            # Only what is known at publish time (nullable columns left out: smaller inserts).
            rows.append({
                "queue_id": request.run_id, "org_slug": request.org_slug, "pipeline_id": request.pipeline,
                "run_id": request.run_id, "scheduled_time": _aware(slots.get(request.run_id, now)).isoformat(),
                "status": STATUS_PENDING, "retry_count": 0,
                "parameters": json.dumps(dict(request.parameters), sort_keys=True, separators=(",", ":")),
                "created_at": now.isoformat(),
            })
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start:start + INSERT_CHUNK]
            self.inserts += 1
            errors = self.client.insert_rows_json(self.table, chunk, row_ids=[row["queue_id"] for row in chunk],
                                                  retry=call_retry(self.settings))
            if errors:
                raise LedgerError(f"{len(errors)} of {len(chunk)} ledger rows refused: {str(errors[:2])[:300]}")

    # -- HTTP door -----------------------------------------------------------------------------------
    def lookup(self, run_id: str, org_slug: str) -> dict[str, Any] | None:
        """The queue row of one run of one org (never another org's), or None."""
        rows = self.queries.rows(
            f"SELECT `run_id`, `org_slug`, `pipeline_id`, `scheduled_time`, `status`, `parameters`, `created_at` "  # noqa: S608
            f"FROM {self.ref} WHERE `run_id` = @run_id AND `org_slug` = @org_slug "
            "ORDER BY `created_at` LIMIT 1", {"run_id": str(run_id), "org_slug": validate_org_slug(org_slug)})
        return rows[0] if rows else None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


__all__ = ["LOOKBACK", "STATUS_PENDING", "ExecutionLedger", "LedgerError"]
