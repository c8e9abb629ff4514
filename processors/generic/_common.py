"""Helpers shared by the generic, GCP and SaaS processors: config checks, identifiers, files under the
project, and the call into the warehouse Writer (run dates: processors._dates). Every bad value is a
PermanentStepError."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from convergence.pipeline.errors import invalid
from convergence.pipeline.services import RunServices
from convergence.processors._dates import DateRange  # noqa: F401 - generic._sink imports it from here
from convergence.warehouse.identifiers import identifier, project_id  # noqa: F401 - re-exported

WRITE_MODES = ("append", "overwrite", "range_replace", "merge")
_MODE_ALIASES = {"truncate": "overwrite", "replace": "overwrite", "write_truncate": "overwrite",
                 "write_append": "append", "range-replace": "range_replace", "upsert": "merge"}


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


def repo_root(services: RunServices) -> Path:
    return Path(services.settings.configs_dir).resolve().parent


def resolve_file(services: RunServices, relative: Any, what: str = "file") -> Path:
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


# -- warehouse -----------------------------------------------------------------------------------------


async def call_writer(services: RunServices, dataset: str, table: str, rows: list[dict[str, Any]], *,
                      writer: Any = None, **options: Any) -> Any:
    """One Writer call (the shared `services.writer` unless one is given), off the event loop when blocking."""
    writer = writer if writer is not None else services.writer
    if inspect.iscoroutinefunction(writer.write):
        return await writer.write(dataset, table, rows, **options)
    return await asyncio.to_thread(writer.write, dataset, table, rows, **options)
