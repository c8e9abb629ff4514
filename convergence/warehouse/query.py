"""Parameterized queries: every value travels as a typed query parameter, never inside the SQL text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from google.cloud import bigquery

from convergence.settings import Settings
from convergence.warehouse.client import call_retry, job_retry
from convergence.warehouse.identifiers import validate_column

_TYPE_ALIASES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "STRUCT": "RECORD"}


def canonical_type(field_type: str) -> str:
    upper = field_type.upper()
    return _TYPE_ALIASES.get(upper, upper)


@dataclass(frozen=True)
class Typed:
    """A value with an explicit BigQuery type (e.g. a None that must be a TIMESTAMP)."""

    type_: str
    value: Any


def infer_type(name: str, value: Any) -> str:
    """The BigQuery type of a Python value passed as a query parameter."""
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, Decimal):
        return "NUMERIC"
    if isinstance(value, datetime):
        return "TIMESTAMP" if value.tzinfo is not None else "DATETIME"
    if isinstance(value, date):
        return "DATE"
    if isinstance(value, time):
        return "TIME"
    if isinstance(value, str) or value is None:
        return "STRING"
    raise TypeError(f"query parameter {name!r}: unsupported type {type(value).__name__}")


def parameter(name: str, value: Any) -> bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter:
    if isinstance(value, Typed):
        if isinstance(value.value, list | tuple):
            return bigquery.ArrayQueryParameter(name, canonical_type(value.type_), list(value.value))
        return bigquery.ScalarQueryParameter(name, canonical_type(value.type_), value.value)
    if isinstance(value, list | tuple):
        kinds = {infer_type(name, item) for item in value} or {"STRING"}
        if len(kinds) != 1:
            raise TypeError(f"query parameter {name!r}: array items of mixed types {sorted(kinds)}")
        return bigquery.ArrayQueryParameter(name, kinds.pop(), list(value))
    return bigquery.ScalarQueryParameter(name, infer_type(name, value), value)


def parameters(params: Mapping[str, Any] | None) -> list[Any]:
    return [parameter(name, value) for name, value in (params or {}).items()]


class QueryRunner:
    """Runs one parameterized statement and waits for it, with bounded retries. Counts its calls."""

    def __init__(self, client: bigquery.Client, settings: Settings, timeout: float = 300.0):
        self.client = client
        self.settings = settings
        self.timeout = timeout
        self.calls = 0

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> tuple[bigquery.QueryJob, Any]:
        config = bigquery.QueryJobConfig(query_parameters=parameters(params))
        self.calls += 1
        job = self.client.query(sql, job_config=config, retry=call_retry(self.settings),
                                job_retry=job_retry(self.settings))
        return job, job.result(retry=call_retry(self.settings), timeout=self.timeout)

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        _, result = self.run(sql, params)
        return [dict(row.items()) for row in result]

    def dml(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        """Run an INSERT/UPDATE/DELETE/MERGE; returns the affected row count."""
        job, _ = self.run(sql, params)
        return int(job.num_dml_affected_rows or 0)

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]], types: Mapping[str, str]) -> int:
        """A DML INSERT of a few rows (`table` is a validated reference, `types` column -> BigQuery type).

        Rows that later UPDATE/MERGE statements touch are written this way, not streamed: real BigQuery
        refuses DML on rows still in the streaming buffer."""
        if not rows:
            return 0
        columns = list(types)
        params: dict[str, Any] = {}
        tuples = []
        for r, row in enumerate(rows):
            names = []
            for c, column in enumerate(columns):
                name = f"r{r}_{c}"
                params[name] = Typed(types[column], row.get(column))
                names.append(f"@{name}")
            tuples.append(f"({', '.join(names)})")
        quoted = ", ".join(f"`{validate_column(column)}`" for column in columns)
        sql = f"INSERT INTO {table} ({quoted}) VALUES {', '.join(tuples)}"  # noqa: S608 - names validated
        return self.dml(sql, params)
