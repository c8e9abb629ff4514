"""Helpers shared by the generic, GCP and SaaS processors: config checks, identifiers, files under the
project, run dates, and the call into the warehouse Writer. Every bad value is a PermanentStepError."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from convergence.pipeline.errors import ErrorCode, invalid
from convergence.processors._dates import DateRange, utc_today

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
# GCP project ids: 6-30 chars, lower-case letters, digits, hyphens; optionally domain-scoped (example.com:p).
_PROJECT = re.compile(r"^(?:[a-z0-9.\-]{1,63}:)?[a-z][a-z0-9\-]{4,28}[a-z0-9]$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
WRITE_MODES = ("append", "overwrite", "range_replace", "merge")
_MODE_ALIASES = {"truncate": "overwrite", "replace": "overwrite", "write_truncate": "overwrite",
                 "write_append": "append", "range-replace": "range_replace", "upsert": "merge"}


def identifier(name: Any, what: str = "table") -> str:
    """A dataset, table, column or routine name that may be pasted into SQL."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise invalid(f"{what} name {name!r} is not a valid BigQuery identifier")
    return name


def project_id(name: Any, what: str = "project") -> str:
    if not isinstance(name, str) or not _PROJECT.match(name):
        raise invalid(f"{what} id {name!r} is not a valid GCP project id")
    return name


def section(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise invalid(f"`{key}` in the step config must be a mapping")
    return dict(value)


def int_option(config: Mapping[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = config.get(name, default)
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid(f"{name} {value!r} is not a whole number") from None
    if not low <= number <= high:
        raise invalid(f"{name} {number} must be between {low} and {high}")
    return number


def float_option(config: Mapping[str, Any], name: str, default: float | None, low: float, high: float) -> float | None:
    value = config.get(name, default)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise invalid(f"{name} {value!r} is not a number") from None
    if not low <= number <= high:
        raise invalid(f"{name} {number:g} must be between {low:g} and {high:g}")
    return number


def bool_option(config: Mapping[str, Any], name: str, default: bool) -> bool:
    value = config.get(name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise invalid(f"{name} {value!r} must be true or false")


def write_mode(value: Any, default: str = "append") -> str:
    mode = str(value or default).strip().lower()
    mode = _MODE_ALIASES.get(mode, mode)
    if mode not in WRITE_MODES:
        raise invalid(f"write_mode {value!r} is not one of {', '.join(WRITE_MODES)}")
    return mode


def repo_root(services: Any) -> Path:
    return Path(services.settings.configs_dir).resolve().parent


def resolve_file(services: Any, relative: Any, what: str = "file") -> Path:
    """A file named in a step config, relative to the project root (as `convergence validate` checks it)."""
    if not isinstance(relative, str | Path) or not str(relative):
        raise invalid(f"{what} must be a path relative to the project")
    root = repo_root(services)
    path = (root / str(relative)).resolve()
    if not path.is_relative_to(root):
        raise invalid(f"{what} {relative!r} points outside the project")
    if not path.is_file():
        raise invalid(f"{what} not found: {relative}")
    return path


@lru_cache(maxsize=128)
def _schema(path: Path, mtime: float) -> tuple[dict[str, Any], ...]:
    data = json.loads(path.read_text(encoding="utf-8"))
    fields = data.get("fields") if isinstance(data, dict) else data
    if not isinstance(fields, list) or not fields or not all(isinstance(f, dict) and f.get("name") for f in fields):
        raise invalid(f"{path.name}: a table schema must be a non-empty list of fields with names")
    return tuple(fields)


def schema_fields(path: Path) -> tuple[dict[str, Any], ...]:
    return _schema(path, path.stat().st_mtime)


# -- run dates ---------------------------------------------------------------------------------------


def month_bounds(day: date) -> tuple[date, date]:
    first = day.replace(day=1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    return first, last


def parse_date(name: str, value: Any, today: date | None = None) -> date:
    """An ISO date, or one of the names today / yesterday / month_start / month_end (UTC)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    today = today or utc_today()
    named = {"today": today, "yesterday": today - timedelta(days=1), "month_start": month_bounds(today)[0],
             "month_end": month_bounds(today)[1]}
    if text in named:
        return named[text]
    if not _ISO_DATE.match(text):
        raise invalid(f"{name} {value!r} is not an ISO date (YYYY-MM-DD)", ErrorCode.INVALID_PARAMETERS)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise invalid(f"{name} {value!r} is not a valid calendar date", ErrorCode.INVALID_PARAMETERS) from None


def _given(value: Any) -> bool:
    return value is not None and value != ""


def run_dates(config: Mapping[str, Any], parameters: Mapping[str, Any], *, default: str = "yesterday",
              lookback_days: int = 1, max_days: int = 366, today: date | None = None) -> DateRange:
    """The run's date range. The step config's `start_date`/`end_date` win, then the run parameters
    `start_date`/`end_date`, or `date` for one day. Without any: `default` is `yesterday` (the range is
    the `lookback_days` days ending yesterday) or `current_month` (first to last day of this month)."""
    today = today or utc_today()
    raw_start = config.get("start_date") if _given(config.get("start_date")) else parameters.get("start_date")
    raw_end = config.get("end_date") if _given(config.get("end_date")) else parameters.get("end_date")
    one_day = config.get("date") if _given(config.get("date")) else parameters.get("date")
    if not _given(raw_start) and not _given(raw_end) and _given(one_day):
        raw_start = raw_end = one_day
    if _given(raw_start) or _given(raw_end):
        start = parse_date("start_date", raw_start, today) if _given(raw_start) else None
        end = parse_date("end_date", raw_end, today) if _given(raw_end) else None
        start = start or end
        end = end or start
    elif default == "current_month":
        start, end = month_bounds(today)
    else:
        end = today - timedelta(days=1)
        start = end - timedelta(days=max(1, lookback_days) - 1)
    assert start is not None and end is not None
    if start > end:
        raise invalid(f"start_date {start} is after end_date {end}", ErrorCode.INVALID_PARAMETERS)
    result = DateRange(start, end)
    if result.days > max_days:
        raise invalid(f"date range {start}..{end} is {result.days} days; at most {max_days} allowed "
                      "(max_range_days): split the run", ErrorCode.INVALID_PARAMETERS)
    return result


# -- warehouse -----------------------------------------------------------------------------------------


async def call_writer(services: Any, dataset: str, table: str, rows: list[dict[str, Any]], *, writer: Any = None,
                      **options: Any) -> Any:
    """One Writer call (the shared `services.writer` unless one is given), off the event loop when blocking."""
    writer = writer if writer is not None else services.writer
    if inspect.iscoroutinefunction(writer.write):
        return await writer.write(dataset, table, rows, **options)
    return await asyncio.to_thread(writer.write, dataset, table, rows, **options)
