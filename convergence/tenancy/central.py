"""The central dataset's tables, by validated reference, and the audit trail."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from google.cloud import bigquery

from convergence.settings import Settings
from convergence.warehouse.client import call_retry
from convergence.warehouse.identifiers import table_id, table_ref, validate_dataset
from convergence.warehouse.query import QueryRunner

log = structlog.get_logger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Central:
    def __init__(self, client: bigquery.Client, settings: Settings):
        self.client = client
        self.settings = settings
        self.dataset = validate_dataset(settings.central_dataset)
        self.queries = QueryRunner(client, settings)

    def ref(self, table: str) -> str:
        return table_ref(self.client.project, self.dataset, table)

    def table_id(self, table: str) -> str:
        return table_id(self.client.project, self.dataset, table)

    def audit(self, org_slug: str, action: str, *, resource_type: str | None = None,
              resource_id: str | None = None, details: Mapping[str, Any] | None = None,
              actor_type: str = "SYSTEM", actor_id: str | None = None, status: str = "SUCCESS") -> None:
        """Append to org_audit_logs (streaming: audit rows are never updated). Never raises; never secrets."""
        self.audit_rows([audit_row(org_slug, action, resource_type=resource_type, resource_id=resource_id,
                                   details=details, actor_type=actor_type, actor_id=actor_id, status=status)])

    def audit_rows(self, rows: list[dict[str, Any]]) -> None:
        """Append many `audit_row`s, up to 10,000 per streaming request (insertAll takes 50,000 rows and
        10 MB per request: "Quotas and limits" page). Never raises."""
        for start in range(0, len(rows), 10_000):
            chunk = rows[start:start + 10_000]
            first = chunk[0]
            try:
                errors = self.client.insert_rows_json(self.table_id("org_audit_logs"), chunk,
                                                      row_ids=[r["audit_id"] for r in chunk],
                                                      retry=call_retry(self.settings))
            except Exception as error:  # noqa: BLE001 - the action itself succeeded; the log line says what was lost
                log.warning("audit log insert failed", action=first["action"], org_slug=first["org_slug"],
                            rows=len(chunk), error=type(error).__name__)
                continue
            if errors:
                log.warning("audit log row refused", action=first["action"], org_slug=first["org_slug"],
                            errors=str(errors)[:300])


def audit_row(org_slug: str, action: str, *, resource_type: str | None = None, resource_id: str | None = None,
              details: Mapping[str, Any] | None = None, actor_type: str = "SYSTEM", actor_id: str | None = None,
              status: str = "SUCCESS") -> dict[str, Any]:
    return {
        "audit_id": uuid.uuid4().hex, "org_slug": org_slug, "actor_type": actor_type, "actor_id": actor_id,
        "action": action, "resource_type": resource_type, "resource_id": resource_id, "status": status,
        "details": json.dumps(dict(details), default=str, sort_keys=True) if details else None,
        "created_at": utcnow().isoformat(),
    }
