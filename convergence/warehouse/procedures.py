"""Stored procedures: CALL with validated names and safely rendered literal arguments; list; create from SQL
files (configs/system/procedures/{domain}/{name}.sql).

Arguments are literals, not query parameters, because `CALL proc(@param)` does not work on the emulator.
Only values that cannot carry SQL are accepted: ints, finite floats, bools, None, dates, aware datetimes,
Decimals and strings of [A-Za-z0-9_.:-] (slugs, ids, ISO dates); anything else is refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from google.api_core.retry import Retry
from google.cloud import bigquery

from convergence.warehouse.client import BOUNDED_RETRY
from convergence.warehouse.identifiers import InvalidIdentifier, validate_dataset, validate_project, validate_table

_SAFE_STRING = re.compile(r"[A-Za-z0-9_.:\-]{0,256}")
_CREATE = re.compile(
    r"^\s*CREATE\s+(OR\s+REPLACE\s+)?PROCEDURE\s+`?(?P<name>[A-Za-z0-9_.\-]+)`?\s*\(", re.IGNORECASE)


def render_literal(value: Any) -> str:
    """A SQL literal for a CALL argument, or InvalidIdentifier if the value is not provably safe."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidIdentifier(f"procedure argument {value!r} is not a finite number")
        return repr(float(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidIdentifier(f"procedure argument {value!r} is not a finite number")
        return f"NUMERIC '{value:f}'"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidIdentifier("procedure datetime arguments must be timezone-aware (TIMESTAMP)")
        return f"TIMESTAMP '{value.isoformat()}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        if not _SAFE_STRING.fullmatch(value):
            raise InvalidIdentifier(f"procedure argument {value[:40]!r} may only contain A-Z, a-z, 0-9, _ . : -")
        return f"'{value}'"
    raise InvalidIdentifier(f"procedure argument of type {type(value).__name__} is not supported")


def procedure_ref(project: str, dataset: str, name: str) -> str:
    return f"`{validate_project(project)}.{validate_dataset(dataset)}.{validate_table(name)}`"


def execute_procedure(client: bigquery.Client, dataset: str, name: str, args: Sequence[Any] = (), *,
                      project: str | None = None, timeout: float = 600.0,
                      retry: Retry = BOUNDED_RETRY) -> list[dict[str, Any]]:
    """CALL the procedure; returns the rows of its last SELECT (if any)."""
    ref = procedure_ref(project or client.project, dataset, name)
    sql = f"CALL {ref}({', '.join(render_literal(arg) for arg in args)})"
    job = client.query(sql, retry=retry)
    return [dict(row.items()) for row in job.result(timeout=timeout, retry=retry)]


def list_procedures(client: bigquery.Client, dataset: str, *, project: str | None = None,
                    retry: Retry = BOUNDED_RETRY) -> list[str]:
    dataset_id = f"{validate_project(project or client.project)}.{validate_dataset(dataset)}"
    return sorted(r.routine_id for r in client.list_routines(dataset_id, retry=retry) if r.type_ == "PROCEDURE")


def procedure_files(directory: Path) -> list[Path]:
    """The .sql files of a procedures directory (configs/system/procedures), one procedure each."""
    return sorted(p for p in directory.rglob("*.sql") if p.is_file())


def create_or_replace_from_sql_file(client: bigquery.Client, dataset: str, path: str | Path, *,
                                    project: str | None = None, retry: Retry = BOUNDED_RETRY) -> str:
    """Run the file's `CREATE OR REPLACE PROCEDURE`. `{project}` and `{dataset}` in the file are replaced by
    the validated names; the procedure must be named after the file. Returns the procedure name."""
    path = Path(path)
    name = validate_table(path.stem)
    project = validate_project(project or client.project)
    dataset = validate_dataset(dataset)
    sql = path.read_text(encoding="utf-8").replace("{project}", project).replace("{dataset}", dataset)
    match = _CREATE.match(sql)
    if not match:
        raise ValueError(f"{path.name}: must start with CREATE [OR REPLACE] PROCEDURE")
    if match.group("name") != f"{project}.{dataset}.{name}":
        raise ValueError(f"{path.name}: creates {match.group('name')}, expected {project}.{dataset}.{name} "
                         "(write it as `{project}.{dataset}." + name + "`)")
    if not match.group(1):  # idempotent sync: always OR REPLACE
        sql = re.sub(r"^\s*CREATE\s+PROCEDURE", "CREATE OR REPLACE PROCEDURE", sql, count=1, flags=re.IGNORECASE)
    client.query(sql, retry=retry).result(retry=retry)
    return name
