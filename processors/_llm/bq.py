"""The BigQuery side of an LLM step, for one org, on the warehouse package: validated names, tables from
schema files under configs/ (partitioning and clustering from the step config), parameterized SQL run
off the event loop with bounded retries. Never a value pasted into SQL: only validated identifiers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc

from convergence.pipeline.errors import ErrorCode, PermanentStepError, invalid
from convergence.warehouse.errors import to_step_error
from convergence.warehouse.identifiers import InvalidIdentifier, table_id, validate_column, validate_table
from convergence.warehouse.query import QueryRunner
from convergence.warehouse.tables import SchemaFileError, ensure_table
from convergence.warehouse.tables import load_schema as warehouse_schema


def identifier(name: Any, what: str = "table") -> str:
    try:
        return validate_column(name) if what == "column" else validate_table(name)
    except InvalidIdentifier as error:
        raise invalid(f"{what} name: {error}", ErrorCode.INVALID_PARAMETERS) from None


def repo_root(services: Any) -> Path:
    return Path(services.settings.configs_dir).resolve().parent


def resolve_file(services: Any, relative: str) -> Path:
    """A file named in a step config, relative to the repository root (as `convergence validate` checks)."""
    root = repo_root(services)
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise invalid(f"{relative!r} points outside the project", ErrorCode.INVALID_PARAMETERS)
    if not path.is_file():
        raise PermanentStepError(f"file not found: {relative}", code=ErrorCode.CONFIG_INVALID)
    return path


def schema_columns(services: Any, schema_file: str) -> list[str]:
    try:
        return [f.name for f in warehouse_schema(resolve_file(services, schema_file))]
    except SchemaFileError as error:
        raise PermanentStepError(str(error), code=ErrorCode.CONFIG_INVALID) from None


class Warehouse:
    def __init__(self, services: Any, org_slug: str):
        self.services = services
        self.client = services.bigquery
        self.project = self.client.project
        self.dataset = services.org_dataset(org_slug)
        self.org_slug = org_slug
        self.jobs = 0

    def table_id(self, table: str) -> str:
        return table_id(self.project, self.dataset, identifier(table))

    def ref(self, table: str) -> str:
        return f"`{self.table_id(table)}`"

    async def table_exists(self, table: str) -> bool:
        try:
            await asyncio.to_thread(self.client.get_table, self.table_id(table))
        except gexc.NotFound:
            return False
        return True

    async def ensure_table(self, table: str, schema_file: str, partitioning: Any = None,
                           clustering: Sequence[str] | None = None) -> None:
        """Create the table from its schema file if missing, or add new nullable columns (warehouse.tables)."""
        path = resolve_file(self.services, schema_file)
        try:
            await asyncio.to_thread(ensure_table, self.client, self.dataset, identifier(table), path,
                                    partitioning=partitioning, clustering=list(clustering) if clustering else None)
        except SchemaFileError as error:
            raise PermanentStepError(str(error), code=ErrorCode.CONFIG_INVALID) from None
        except gexc.GoogleAPIError as error:
            raise to_step_error(error, f"creating {self.table_id(table)}") from error

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> tuple[list[dict[str, Any]], Any]:
        """Run one parameterized query job; returns (rows as dicts, job)."""
        runner = QueryRunner(self.client, self.services.settings)

        def run() -> tuple[list[dict[str, Any]], Any]:
            job, result = runner.run(sql, params)
            return [dict(row.items()) for row in result], job

        self.jobs += 1
        try:
            return await asyncio.to_thread(run)
        except gexc.GoogleAPIError as error:
            raise to_step_error(error, f"query on {self.dataset}") from error
