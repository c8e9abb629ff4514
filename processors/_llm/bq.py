"""The BigQuery side of an LLM step, for one org, on the warehouse package: validated names, tables from
schema files under configs/ (partitioning and clustering from the step config), parameterized SQL run
off the event loop with bounded retries. Never a value pasted into SQL: only validated identifiers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convergence.pipeline.errors import ErrorCode, PermanentStepError, invalid
from convergence.pipeline.services import RunServices
from convergence.warehouse.facade import Warehouse as FacadeWarehouse
from convergence.warehouse.identifiers import InvalidIdentifier, table_id, validate_column, validate_table
from convergence.warehouse.tables import SchemaFileError
from convergence.warehouse.tables import load_schema as warehouse_schema


def identifier(name: Any, what: str = "table") -> str:
    try:
        return validate_column(name) if what == "column" else validate_table(name)
    except InvalidIdentifier as error:
        raise invalid(f"{what} name: {error}", ErrorCode.INVALID_PARAMETERS) from None


def repo_root(services: RunServices) -> Path:
    return Path(services.settings.configs_dir).resolve().parent


def resolve_file(services: RunServices, relative: str) -> Path:
    """A file named in a step config, relative to the repository root (as `convergence validate` checks)."""
    root = repo_root(services)
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise invalid(f"{relative!r} points outside the project", ErrorCode.INVALID_PARAMETERS)
    if not path.is_file():
        raise PermanentStepError(f"file not found: {relative}", code=ErrorCode.CONFIG_INVALID)
    return path


def schema_columns(services: RunServices, schema_file: str) -> list[str]:
    try:
        return [f.name for f in warehouse_schema(resolve_file(services, schema_file))]
    except SchemaFileError as error:
        raise PermanentStepError(str(error), code=ErrorCode.CONFIG_INVALID) from None


class Warehouse(FacadeWarehouse):
    """The org's warehouse (convergence.warehouse.facade) with the LLM steps' names: tables are checked
    as step parameters (INVALID_PARAMETERS) and schema files are paths under the project."""

    def __init__(self, services: RunServices, org_slug: str):
        super().__init__(services, org_slug)

    def table_id(self, table: str, dataset: str | None = None) -> str:
        return table_id(self.project, dataset or self.dataset, identifier(table))

    async def table_exists(self, table: str) -> bool:
        return await super().table_exists(self.table_id(table))

    async def ensure_table(self, table: str, schema_file: str, partitioning: Any = None,  # type: ignore[override]
                           clustering: Sequence[str] | None = None) -> None:
        """Create the table from its schema file if missing, or add new nullable columns (warehouse.tables)."""
        await super().ensure_table(identifier(table), resolve_file(self.services, schema_file),
                                   partitioning=partitioning, clustering=clustering)
