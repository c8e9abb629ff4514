"""The names a SQL-running step's config may use besides the run's own, and a blocking table set-up for
callers outside a run. Processors reach BigQuery through convergence.warehouse.facade.Warehouse."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import invalid
from convergence.warehouse.client import call_retry
from convergence.warehouse.tables import SchemaFileError, ensure_dataset
from convergence.warehouse.tables import ensure_table as warehouse_ensure_table


def sql_names(context: RunContext) -> dict[str, Any]:
    """Names a step config may use besides the run's own: the service project and the org's dataset."""
    services = context.services
    return {
        "project_id": services.bigquery.project,
        "org_dataset": services.org_dataset(context.org_slug),
        "central_dataset": services.settings.central_dataset,
    }


def ensure_table(client: Any, settings: Any, dataset: str, table: str, schema_path: Path, *,
                 partition_field: str | None = None, cluster_fields: Sequence[str] = ()) -> bool:
    """Create `dataset.table` from a JSON schema file unless it exists (new nullable columns are added
    to an existing one). True when created. Blocking (in a run: `await Warehouse.ensure_table`)."""
    retry = call_retry(settings)
    try:
        ensure_dataset(client, dataset, location=settings.bigquery_location, retry=retry)
        change = warehouse_ensure_table(client, dataset, table, schema_path, partitioning=partition_field,
                                        clustering=list(cluster_fields) or None, retry=retry)
    except SchemaFileError as error:
        raise invalid(str(error)) from None
    return change.action == "created"
