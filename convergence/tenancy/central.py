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
        row = {
            "audit_id": uuid.uuid4().hex, "org_slug": org_slug, "actor_type": actor_type, "actor_id": actor_id,
            "action": action, "resource_type": resource_type, "resource_id": resource_id, "status": status,
            "details": json.dumps(dict(details), default=str, sort_keys=True) if details else None,
            "created_at": utcnow().isoformat(),
        }
        try:
            errors = self.client.insert_rows_json(self.table_id("org_audit_logs"), [row], row_ids=[row["audit_id"]],
                                                  retry=call_retry(self.settings))
        except Exception as error:  # noqa: BLE001 - the action itself succeeded; the log line says what was lost
            log.warning("audit log insert failed", action=action, org_slug=org_slug, error=type(error).__name__)
            return
        if errors:
            log.warning("audit log row refused", action=action, org_slug=org_slug, errors=str(errors)[:300])
