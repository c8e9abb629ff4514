"""Blocking BigQuery calls used by the SQL-running processors (call them through asyncio.to_thread):
tables from schema files (warehouse.tables, layout from config), parameterized query jobs with the
warehouse's bounded retries, and the names a step's SQL may use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convergence.pipeline.context import RunContext


def sql_names(context: RunContext) -> dict[str, Any]:
    """Names a step config may use besides the run's own: the service project and the org's dataset."""
    services = context.services
    return {
        "project_id": services.bigquery.project,
        "org_dataset": services.org_dataset(context.org_slug),
        "central_dataset": services.settings.central_dataset,
    }


def table_exists(client: Any, table_ref: str) -> bool:
    from google.api_core.exceptions import NotFound

    try:
        client.get_table(table_ref)
    except NotFound:
        return False
    return True


def ensure_table(client: Any, settings: Any, dataset: str, table: str, schema_path: Path, *,
                 partition_field: str | None = None, cluster_fields: Sequence[str] = ()) -> bool:
    """Create `dataset.table` from a JSON schema file unless it exists (new nullable columns are added
    to an existing one). True when created."""
    from convergence.processors.generic._common import invalid
    from convergence.warehouse.client import call_retry
    from convergence.warehouse.tables import SchemaFileError, ensure_dataset
    from convergence.warehouse.tables import ensure_table as warehouse_ensure_table

    retry = call_retry(settings)
    try:
        ensure_dataset(client, dataset, location=settings.bigquery_location, retry=retry)
        change = warehouse_ensure_table(client, dataset, table, schema_path, partitioning=partition_field,
                                        clustering=list(cluster_fields) or None, retry=retry)
    except SchemaFileError as error:
        raise invalid(str(error)) from None
    return change.action == "created"


def run_query(client: Any, settings: Any, sql: str, parameters: Sequence[Any] = ()) -> Any:
    """Run one query job (parameters are bigquery query parameter objects) to completion; returns the job."""
    from google.cloud import bigquery

    from convergence.warehouse.client import call_retry, job_retry

    job = client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=list(parameters)),
                       retry=call_retry(settings), job_retry=job_retry(settings))
    job.result(retry=call_retry(settings))
    return job
