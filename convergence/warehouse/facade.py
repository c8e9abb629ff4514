"""The one way processors reach BigQuery: an async facade over the service's client (or a customer's, for
a source project), for one dataset (by default the org's). Blocking client calls run off the event loop;
queries carry typed parameters with the warehouse's bounded retries; Google errors become step errors
(warehouse.errors: the same codes the executor's classifier gives). Processors never import
google.cloud.bigquery: query parameters come from `warehouse.query` (named values, `Typed`) or
`scalar_parameters` ((name, type, value) specs).

The `*_blocking` methods are for code already on a worker thread (a Writer consuming a source query's
pages); everything else is awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from convergence.pipeline.errors import invalid
from convergence.pipeline.services import RunServices
from convergence.warehouse.client import call_retry, job_retry
from convergence.warehouse.errors import to_step_error
from convergence.warehouse.identifiers import table_id
from convergence.warehouse.query import QueryRunner
from convergence.warehouse.tables import SchemaFileError, TableChange, ensure_dataset
from convergence.warehouse.tables import ensure_table as _ensure_table


def scalar_parameters(specs: Sequence[tuple[str, str, Any]]) -> list[Any]:
    """Query parameters from (name, BigQuery type, value) specs."""
    return [bigquery.ScalarQueryParameter(name, kind, value) for name, kind, value in specs]


class Warehouse:
    def __init__(self, services: RunServices | None, org_slug: str | None = None, *, dataset: str | None = None,
                 client: Any = None, settings: Any = None):
        """`services` is None only outside a run (`outside_run`): client and settings are then given."""
        self.services = services
        if services is not None:
            settings = settings if settings is not None else services.settings
            client = client if client is not None else services.bigquery
        self.settings = settings
        self.client = client
        self.project = self.client.project
        self.org_slug = org_slug
        self.dataset = dataset or (services.org_dataset(org_slug) if services is not None and org_slug else "")
        self.jobs = 0

    @classmethod
    def on_project(cls, services: RunServices, project: str, credentials: Any = None) -> Warehouse:
        """A source project's warehouse (a customer's billing export), with its own credentials."""
        return cls(services, client=services.bigquery_for(project, credentials))

    @classmethod
    def outside_run(cls, client: Any, settings: Any, dataset: str) -> Warehouse:
        """One dataset through a client of the caller's (a CLI command has no run services)."""
        return cls(None, dataset=dataset, client=client, settings=settings)

    # -- names ------------------------------------------------------------------------------------------
    def table_id(self, table: str, dataset: str | None = None) -> str:
        return table_id(self.project, dataset or self.dataset, table)

    def ref(self, table: str, dataset: str | None = None) -> str:
        return f"`{self.table_id(table, dataset)}`"

    # -- tables -----------------------------------------------------------------------------------------
    async def get_table(self, full_id: str) -> Any:
        try:
            return await asyncio.to_thread(self.client.get_table, full_id)
        except gexc.GoogleAPIError as error:
            raise to_step_error(error, f"reading {full_id}") from error

    async def table_exists(self, full_id: str) -> bool:
        try:
            await asyncio.to_thread(self.client.get_table, full_id)
        except gexc.NotFound:
            return False
        except gexc.GoogleAPIError as error:
            raise to_step_error(error, f"reading {full_id}") from error
        return True

    def find_table_blocking(self, full_id: str) -> Any | None:
        """The table's metadata, or None when it does not exist."""
        try:
            return self.client.get_table(full_id)
        except gexc.NotFound:
            return None
        except gexc.GoogleAPIError as error:
            raise to_step_error(error, f"reading {full_id}") from error

    async def ensure_table(self, table: str, schema_path: Path, *, dataset: str | None = None,
                           partitioning: Any = None, clustering: Sequence[str] | None = None,
                           create_dataset: bool = False) -> TableChange:
        """Create the table from its schema file if missing, or add new nullable columns (warehouse.tables);
        with `create_dataset`, the dataset too."""
        dataset = dataset or self.dataset
        retry = call_retry(self.settings)

        def run() -> TableChange:
            if create_dataset:
                ensure_dataset(self.client, dataset, location=self.settings.bigquery_location, retry=retry)
            return _ensure_table(self.client, dataset, table, schema_path, partitioning=partitioning,
                                 clustering=list(clustering) if clustering else None, retry=retry)

        try:
            return await asyncio.to_thread(run)
        except SchemaFileError as error:
            raise invalid(str(error)) from None
        except gexc.GoogleAPIError as error:
            raise to_step_error(error, f"creating {dataset}.{table}") from error

    # -- queries ----------------------------------------------------------------------------------------
    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> tuple[list[dict[str, Any]], Any]:
        """One query job with named parameters (values, `Typed`); returns (rows as dicts, job)."""
        self.jobs += 1
        try:
            return await asyncio.to_thread(self._query, sql, params)
        except gexc.GoogleAPIError as error:
            raise to_step_error(error, f"query on {self.dataset or self.project}") from error

    def query_blocking(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """`query` on the caller's thread; returns the rows as dicts."""
        self.jobs += 1
        try:
            return self._query(sql, params)[0]
        except gexc.GoogleAPIError as error:
            raise to_step_error(error, f"query on {self.dataset or self.project}") from error

    def dml_blocking(self, sql: str, params: Mapping[str, Any] | None = None, *,
                     missing_table_ok: bool = False) -> int:
        """An INSERT/UPDATE/DELETE/MERGE on the caller's thread: its affected row count (with
        `missing_table_ok`, 0 when a table it names does not exist)."""
        self.jobs += 1
        try:
            return QueryRunner(self.client, self.settings).dml(sql, params)
        except gexc.NotFound as error:
            if missing_table_ok:
                return 0
            raise to_step_error(error, f"query on {self.dataset or self.project}") from error
        except gexc.GoogleAPIError as error:
            raise to_step_error(error, f"query on {self.dataset or self.project}") from error

    def _query(self, sql: str, params: Mapping[str, Any] | None) -> tuple[list[dict[str, Any]], Any]:
        job, result = QueryRunner(self.client, self.settings).run(sql, params)
        return [dict(row.items()) for row in result], job

    async def run(self, sql: str, parameters: Sequence[Any] = (), *, dry_run: bool = False) -> Any:
        """One statement with prepared parameters (`scalar_parameters`), run to completion (a dry run only
        plans it: its job has the result schema). Returns the job."""
        self.jobs += 1
        try:
            return await asyncio.to_thread(self._run, sql, parameters, dry_run)
        except gexc.GoogleAPIError as error:
            raise to_step_error(error, f"{'dry run' if dry_run else 'query'} on {self.dataset or self.project}") \
                from error

    def _run(self, sql: str, parameters: Sequence[Any], dry_run: bool) -> Any:
        if dry_run:
            config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False, query_parameters=list(parameters))
            return self.client.query(sql, job_config=config, retry=call_retry(self.settings))
        job = self.client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=list(parameters)),
                                retry=call_retry(self.settings), job_retry=job_retry(self.settings))
        job.result(retry=call_retry(self.settings))
        return job

    def paged_query_blocking(self, sql: str, parameters: Sequence[Any], page_size: int) -> tuple[Any, Any]:
        """Start a query and return (job, result) whose `result.pages` are fetched as they are read; call it
        on a worker thread."""
        self.jobs += 1
        job = self.client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=list(parameters)),
                                retry=call_retry(self.settings), job_retry=job_retry(self.settings))
        return job, job.result(page_size=page_size, retry=call_retry(self.settings))

    # -- stored procedures ------------------------------------------------------------------------------
    def procedures(self, dataset: str | None = None) -> Any:
        """The procedure catalog of `dataset` (default: the central dataset); its calls are blocking, run
        them with `blocking`."""
        from convergence.warehouse.catalog import ProcedureCatalog

        return ProcedureCatalog(self.client, self.settings, dataset)

    async def blocking(self, call: Any, *args: Any) -> Any:
        """Run a blocking warehouse call (a catalog method) off the event loop; its errors are its own (a
        caller may look for a missing routine: catalog.missing_routine)."""
        return await asyncio.to_thread(call, *args)
