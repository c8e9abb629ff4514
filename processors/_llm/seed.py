"""Seed per-org tables (pricing, subscriptions) from CSV files under configs/, typed by their JSON schemas.

Config:
  mode     if_empty (default: seed only when the org has no rows yet, so edits are never overwritten)
           or overwrite (reset to the defaults)
  tables   list of {table, csv_file, schema_file, unique: [columns that identify a row]}

Every CSV value is checked against the schema (NUMERIC as an exact decimal, DATE as ISO, INT64, BOOL,
REQUIRED not empty, no unknown columns, no duplicate keys) before anything is written.
"""

from __future__ import annotations

import asyncio
import csv
import inspect
from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, PermanentStepError, invalid
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.pipeline.services import RunServices
from convergence.processors._llm.bq import Warehouse, identifier, resolve_file
from convergence.processors._llm.params import choice
from convergence.processors._llm.values import now_iso, numeric_text
from convergence.warehouse.tables import load_schema

_COUNT = "SELECT COUNT(*) AS n FROM {table} WHERE org_slug = @org_slug"


def _convert(value: str, kind: str, where: str) -> Any:
    text = value.strip()
    if text == "":
        return None
    try:
        if kind in ("NUMERIC", "BIGNUMERIC"):
            return numeric_text(Decimal(text))
        if kind in ("INT64", "INTEGER"):
            return int(text)
        if kind in ("BOOL", "BOOLEAN"):
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if kind == "DATE":
            return date.fromisoformat(text).isoformat()
        if kind in ("FLOAT64", "FLOAT"):
            raise ValueError("FLOAT columns are not allowed in seeds: use NUMERIC")
    except (ValueError, InvalidOperation) as error:
        raise PermanentStepError(f"{where}: {text!r} is not a valid {kind} ({error})",
                                 code=ErrorCode.SEED_INVALID) from None
    return text


def read_seed(services: RunServices, csv_file: str, schema_file: str, org_slug: str,
              unique: list[str] | None = None) -> list[dict[str, Any]]:
    fields = {f.name: f for f in load_schema(resolve_file(services, schema_file))}
    path = resolve_file(services, csv_file)
    loaded_at = now_iso()
    rows: list[dict[str, Any]] = []
    seen: dict[tuple, int] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        unknown = [c for c in header if c not in fields]
        if unknown:
            raise PermanentStepError(f"{csv_file}: columns {unknown} are not in {schema_file}",
                                     code=ErrorCode.SEED_INVALID)
        for line, record in enumerate(reader, start=2):
            row: dict[str, Any] = {"org_slug": org_slug}
            if "loaded_at" in fields:
                row["loaded_at"] = loaded_at
            for name, value in record.items():
                if name is None:
                    raise PermanentStepError(f"{csv_file}:{line}: more values than columns",
                                             code=ErrorCode.SEED_INVALID)
                kind = fields[name].field_type.upper()
                row[name] = _convert(value or "", kind, f"{csv_file}:{line} {name}")
            missing = [n for n, f in fields.items() if (f.mode or "") == "REQUIRED" and row.get(n) is None]
            if missing:
                raise PermanentStepError(f"{csv_file}:{line}: required {missing} empty", code=ErrorCode.SEED_INVALID)
            if unique:
                key = tuple(row.get(c) for c in unique)
                if key in seen:
                    raise PermanentStepError(f"{csv_file}:{line}: duplicate {dict(zip(unique, key, strict=True))} "
                                             f"(first on line {seen[key]})", code=ErrorCode.SEED_INVALID)
                seen[key] = line
            rows.append(row)
    return rows


class SeedCsv:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        mode = choice(config, "mode", "if_empty", ("if_empty", "overwrite"))
        tables = config.get("tables")
        if not isinstance(tables, list) or not tables:
            raise invalid("tables in the step config must list {table, csv_file, schema_file}",
                          ErrorCode.INVALID_PARAMETERS)
        services = context.services
        warehouse = Warehouse(services, context.org_slug)
        seeded: list[str] = []
        kept: list[str] = []
        written = 0
        for spec in tables:
            if not isinstance(spec, Mapping):
                raise invalid("each entry of tables must be a mapping", ErrorCode.INVALID_PARAMETERS)
            table = identifier(spec.get("table"))
            csv_file, schema_file = str(spec.get("csv_file", "")), str(spec.get("schema_file", ""))
            unique = list(spec.get("unique") or [])
            rows = read_seed(services, csv_file, schema_file, context.org_slug, unique)  # validate first
            if mode == "if_empty" and await self._has_rows(warehouse, table, context.org_slug):
                kept.append(table)
                continue
            await self._write(services, warehouse.dataset, table, rows, schema_file, context.org_slug)
            written += len(rows)
            seeded.append(table)
        return {"status": "SUCCESS", "rows_processed": written, "mode": mode,
                "seeded_tables": ",".join(seeded), "kept_tables": ",".join(kept)}

    @staticmethod
    async def _has_rows(warehouse: Warehouse, table: str, org_slug: str) -> bool:
        if not await warehouse.table_exists(table):
            return False
        rows, _ = await warehouse.query(_COUNT.format(table=warehouse.ref(table)), {"org_slug": org_slug})
        return bool(rows and rows[0]["n"])

    @staticmethod
    async def _write(services: RunServices, dataset: str, table: str, rows: list[dict[str, Any]], schema_file: str,
                     org_slug: str) -> None:
        writer = services.writer
        kwargs = {"mode": "overwrite", "org_slug": org_slug, "schema_path": schema_file}
        if inspect.iscoroutinefunction(writer.write):
            await writer.write(dataset, table, rows, **kwargs)
        else:
            await asyncio.to_thread(writer.write, dataset, table, rows, **kwargs)
