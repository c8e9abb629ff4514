"""Datasets and tables from JSON schema files (BigQuery's JSON schema format), created idempotently.

Partitioning and clustering come from config (YAML) and are passed in; nothing about a table's layout is
written in Python. An existing table evolves only in the ways BigQuery allows without rewriting data:
new NULLABLE/REPEATED top-level columns are added, clustering and descriptions are synced. Everything else
(type or mode change, a column missing from the file, new nested fields, other partitioning) is reported,
never applied.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import bigquery

from convergence.warehouse.client import BOUNDED_RETRY
from convergence.warehouse.identifiers import (
    InvalidIdentifier,
    table_ref,
    validate_column,
    validate_dataset,
    validate_table,
)
from convergence.warehouse.query import canonical_type

_TYPES = frozenset({"STRING", "BYTES", "INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC", "BOOL", "TIMESTAMP", "DATE",
                    "TIME", "DATETIME", "GEOGRAPHY", "JSON", "RECORD"})
_MODES = frozenset({"NULLABLE", "REQUIRED", "REPEATED"})
_PARTITION_TYPES = frozenset({"HOUR", "DAY", "MONTH", "YEAR"})


class SchemaFileError(ValueError):
    """A schema file or a table's layout config is not usable."""


# -- schema files ----------------------------------------------------------------------------------------


def _check_fields(raw: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise SchemaFileError(f"{where}: a schema is a non-empty list of fields")
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise SchemaFileError(f"{where}: every field is an object with name and type")
        try:
            name = validate_column(item.get("name"))
        except InvalidIdentifier as error:
            raise SchemaFileError(f"{where}: {error}") from None
        if name.lower() in seen:
            raise SchemaFileError(f"{where}: column {name!r} appears twice")
        seen.add(name.lower())
        kind = canonical_type(str(item.get("type", "")))
        if kind not in _TYPES:
            raise SchemaFileError(f"{where}: column {name!r} has unknown type {item.get('type')!r}")
        if str(item.get("mode", "NULLABLE")).upper() not in _MODES:
            raise SchemaFileError(f"{where}: column {name!r} has unknown mode {item.get('mode')!r}")
        if kind == "RECORD":
            _check_fields(item.get("fields"), f"{where}.{name}")
        elif item.get("fields"):
            raise SchemaFileError(f"{where}: column {name!r} of type {kind} cannot have sub-fields")
    return raw


@lru_cache(maxsize=256)
def _load_schema_cached(path: Path, mtime_ns: int) -> tuple[bigquery.SchemaField, ...]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SchemaFileError(f"{path}: cannot read schema: {error}") from None
    if isinstance(raw, dict):  # {"fields": [...]} is accepted too
        raw = raw.get("fields")
    fields = _check_fields(raw, path.name)
    return tuple(bigquery.SchemaField.from_api_repr(item) for item in fields)


def load_schema(path: str | Path) -> list[bigquery.SchemaField]:
    """SchemaFields from a JSON schema file (name/type/mode/description/fields), validated."""
    path = Path(path).resolve()
    if not path.is_file():
        raise SchemaFileError(f"schema file not found: {path}")
    return list(_load_schema_cached(path, path.stat().st_mtime_ns))


# -- layout from config ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Partitioning:
    field: str | None  # None: ingestion-time partitioning
    type: str = "DAY"
    expiration_days: int | None = None

    @classmethod
    def from_config(cls, value: Any) -> Partitioning | None:
        """From YAML: null, a column name (daily), or {field, type, expiration_days}."""
        if value is None or isinstance(value, Partitioning):
            return value
        if isinstance(value, str):
            value = {"field": value}
        if not isinstance(value, Mapping):
            raise SchemaFileError(f"partitioning must be a column name or a mapping, got {value!r}")
        unknown = set(value) - {"field", "type", "expiration_days"}
        if unknown:
            raise SchemaFileError(f"partitioning: unknown keys {sorted(unknown)}")
        kind = str(value.get("type", "DAY")).upper()
        if kind not in _PARTITION_TYPES:
            raise SchemaFileError(f"partitioning type {kind!r} is not one of {sorted(_PARTITION_TYPES)}")
        column = value.get("field")
        days = value.get("expiration_days")
        if days is not None and (not isinstance(days, int) or days < 1):
            raise SchemaFileError(f"partitioning expiration_days must be a positive integer, got {days!r}")
        return cls(field=validate_column(column) if column is not None else None, type=kind, expiration_days=days)

    def to_bigquery(self) -> bigquery.TimePartitioning:
        expiration = int(timedelta(days=self.expiration_days).total_seconds() * 1000) if self.expiration_days else None
        return bigquery.TimePartitioning(type_=self.type, field=self.field, expiration_ms=expiration)

    def matches(self, existing: bigquery.TimePartitioning | None) -> bool:
        return existing is not None and existing.type_ == self.type and existing.field == self.field


def clustering_from_config(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not 1 <= len(value) <= 4:
        raise SchemaFileError(f"clustering must be a list of 1-4 column names, got {value!r}")
    return [validate_column(column) for column in value]


# -- DDL type rendering (for ALTER TABLE ADD COLUMN) -----------------------------------------------------


def ddl_type(schema_field: bigquery.SchemaField) -> str:
    kind = canonical_type(schema_field.field_type)
    if kind == "RECORD":
        inner = ", ".join(f"`{validate_column(sub.name)}` {ddl_type(sub)}" for sub in schema_field.fields)
        kind = f"STRUCT<{inner}>"
    return f"ARRAY<{kind}>" if schema_field.mode == "REPEATED" else kind


# -- comparison ------------------------------------------------------------------------------------------


@dataclass
class SchemaDiff:
    additions: list[bigquery.SchemaField] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    descriptions_differ: bool = False


def _mode(schema_field: bigquery.SchemaField) -> str:
    return (schema_field.mode or "NULLABLE").upper()


def diff_schema(existing: Sequence[bigquery.SchemaField], desired: Sequence[bigquery.SchemaField],
                prefix: str = "") -> SchemaDiff:
    diff = SchemaDiff()
    current = {f.name.lower(): f for f in existing}
    wanted = {f.name.lower() for f in desired}
    for want in desired:
        name = f"{prefix}{want.name}"
        have = current.get(want.name.lower())
        if have is None:
            if prefix:
                diff.problems.append(f"new nested field {name}: not applied (add it by hand)")
            elif _mode(want) == "REQUIRED":
                diff.problems.append(f"new column {name} is REQUIRED: BigQuery only adds NULLABLE/REPEATED columns")
            else:
                diff.additions.append(want)
            continue
        if canonical_type(have.field_type) != canonical_type(want.field_type):
            diff.problems.append(f"column {name}: type {have.field_type} in the table, {want.field_type} in the "
                                 "schema file (type changes are not applied)")
            continue
        if _mode(have) != _mode(want):
            diff.problems.append(f"column {name}: mode {_mode(have)} in the table, {_mode(want)} in the schema "
                                 "file (mode changes are not applied)")
        if (have.description or None) != (want.description or None):
            diff.descriptions_differ = True
        if canonical_type(want.field_type) == "RECORD":
            nested = diff_schema(have.fields, want.fields, prefix=f"{name}.")
            diff.problems += nested.problems
            diff.descriptions_differ |= nested.descriptions_differ
    for name, have in current.items():
        if name not in wanted:
            diff.problems.append(f"column {prefix}{have.name} is in the table but not in the schema file "
                                 "(columns are never dropped)")
    return diff


def _merged_schema(existing: Sequence[bigquery.SchemaField], desired: Sequence[bigquery.SchemaField],
                   additions: Sequence[bigquery.SchemaField]) -> list[bigquery.SchemaField]:
    """The table's schema with descriptions from the file and the added columns appended."""
    wanted = {f.name.lower(): f for f in desired}
    merged = []
    for have in existing:
        want = wanted.get(have.name.lower())
        if want is None or canonical_type(want.field_type) != canonical_type(have.field_type):
            merged.append(have)
            continue
        api = have.to_api_repr()
        api["description"] = want.description
        if canonical_type(have.field_type) == "RECORD":
            api["fields"] = [f.to_api_repr() for f in _merged_schema(have.fields, want.fields, [])]
        merged.append(bigquery.SchemaField.from_api_repr(api))
    return merged + list(additions)


# -- ensure ----------------------------------------------------------------------------------------------


@dataclass
class TableChange:
    table_id: str
    action: Literal["created", "updated", "unchanged"]
    added_columns: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    table: bigquery.Table | None = field(default=None, repr=False)


def ensure_dataset(client: bigquery.Client, dataset: str, *, project: str | None = None,
                   location: str | None = None, description: str | None = None,
                   retry: Retry = BOUNDED_RETRY) -> bool:
    """Create the dataset if missing; True when it was created."""
    dataset_id = f"{project or client.project}.{validate_dataset(dataset)}"
    try:
        client.get_dataset(dataset_id, retry=retry)
        return False
    except gexc.NotFound:
        pass
    spec = bigquery.Dataset(dataset_id)
    spec.location = location or client.location or "US"
    spec.description = description
    try:
        client.create_dataset(spec, retry=retry)
    except gexc.Conflict:  # created by someone else meanwhile
        return False
    return True


def ensure_table(client: bigquery.Client, dataset: str, table: str,
                 schema: str | Path | Sequence[bigquery.SchemaField], *,
                 partitioning: Partitioning | Mapping[str, Any] | str | None = None,
                 clustering: Sequence[str] | None = None, description: str | None = None,
                 project: str | None = None, retry: Retry = BOUNDED_RETRY) -> TableChange:
    """Create the table, or bring an existing one up to the schema file where BigQuery allows it."""
    project = project or client.project
    table_id = f"{project}.{validate_dataset(dataset)}.{validate_table(table)}"
    fields = load_schema(schema) if isinstance(schema, str | Path) else list(schema)
    layout = Partitioning.from_config(partitioning)
    cluster = clustering_from_config(list(clustering) if clustering else None)
    _check_layout_columns(fields, layout, cluster, table)
    try:
        existing = client.get_table(table_id, retry=retry)
    except gexc.NotFound:
        return _create(client, table_id, fields, layout, cluster, description, retry)
    return _evolve(client, existing, fields, layout, cluster, description, retry)


def _check_layout_columns(fields: Sequence[bigquery.SchemaField], layout: Partitioning | None,
                          cluster: list[str] | None, table: str) -> None:
    names = {f.name: canonical_type(f.field_type) for f in fields}
    if layout and layout.field:
        if layout.field not in names:
            raise SchemaFileError(f"{table}: partitioning column {layout.field!r} is not in the schema")
        if names[layout.field] not in ("DATE", "TIMESTAMP", "DATETIME"):
            raise SchemaFileError(f"{table}: partitioning column {layout.field!r} must be DATE/TIMESTAMP/DATETIME")
    for column in cluster or []:
        if column not in names:
            raise SchemaFileError(f"{table}: clustering column {column!r} is not in the schema")


def _create(client: bigquery.Client, table_id: str, fields: list[bigquery.SchemaField],
            layout: Partitioning | None, cluster: list[str] | None, description: str | None,
            retry: Retry) -> TableChange:
    spec = bigquery.Table(table_id, schema=fields)
    if layout:
        spec.time_partitioning = layout.to_bigquery()
    if cluster:
        spec.clustering_fields = cluster
    spec.description = description
    try:
        created = client.create_table(spec, retry=retry)
    except gexc.Conflict:  # a concurrent ensure won the race: compare against what it made
        return _evolve(client, client.get_table(table_id, retry=retry), fields, layout, cluster, description,
                       retry)
    return TableChange(table_id, "created", table=created)


def _evolve(client: bigquery.Client, existing: bigquery.Table, fields: list[bigquery.SchemaField],
            layout: Partitioning | None, cluster: list[str] | None, description: str | None,
            retry: Retry) -> TableChange:
    table_id = f"{existing.project}.{existing.dataset_id}.{existing.table_id}"
    diff = diff_schema(existing.schema, fields)
    problems = list(diff.problems)
    if layout and not layout.matches(existing.time_partitioning):
        problems.append(f"partitioning is {_partitioning_text(existing.time_partitioning)} in the table, "
                        f"{layout.type} on {layout.field or '_PARTITIONTIME'} in config (not changed)")
    if layout is None and existing.time_partitioning is not None:
        problems.append("the table is partitioned but config asks for none (not changed)")
    update_fields: list[str] = []
    missing: list[bigquery.SchemaField] = []
    if diff.additions:
        _add_columns(client, table_id, diff.additions, retry)
        existing = client.get_table(table_id, retry=retry)  # the ALTERs changed its etag
        # BigQuery's metadata now has the columns; the emulator's does not (the patch below adds them).
        present = {f.name.lower() for f in existing.schema}
        missing = [f for f in diff.additions if f.name.lower() not in present]
    if diff.additions or diff.descriptions_differ:
        existing.schema = _merged_schema(existing.schema, fields, missing)
        update_fields.append("schema")
    if cluster is not None and list(existing.clustering_fields or []) != cluster:
        existing.clustering_fields = cluster
        update_fields.append("clustering_fields")
    if description is not None and existing.description != description:
        existing.description = description
        update_fields.append("description")
    if update_fields:
        existing = client.update_table(existing, update_fields, retry=retry)
    action: Literal["updated", "unchanged"] = "updated" if update_fields or diff.additions else "unchanged"
    return TableChange(table_id, action, [f.name for f in diff.additions], problems, existing)


def _add_columns(client: bigquery.Client, table_id: str, additions: Sequence[bigquery.SchemaField],
                 retry: Retry) -> None:
    """ALTER TABLE ADD COLUMN, one column per statement (the emulator takes one ALTER command at a time).

    DDL rather than a schema patch because it changes the data on the emulator too (a patch there only
    changes metadata); on BigQuery both are equivalent, and the patch that follows syncs descriptions."""
    project, dataset, table = table_id.split(".")
    ref = table_ref(project, dataset, table)
    for column in additions:
        sql = f"ALTER TABLE {ref} ADD COLUMN IF NOT EXISTS `{validate_column(column.name)}` {ddl_type(column)}"
        client.query(sql, retry=retry).result(retry=retry)


def _partitioning_text(existing: bigquery.TimePartitioning | None) -> str:
    if existing is None:
        return "none"
    return f"{existing.type_} on {existing.field or '_PARTITIONTIME'}"
