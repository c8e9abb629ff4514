"""Dotted paths into decoded JSON: `data`, `meta.next_cursor`, `results.0.id`, `items.*.instances`.

`*` walks every value of an object or every item of a list; list indexes are plain numbers. Small on
purpose: response paths in pipeline configs are short, and a full JSONPath engine is not needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from convergence.pipeline.errors import ErrorCode, PermanentStepError

_MISSING = object()


def _parts(path: str | None) -> list[str]:
    if path is None:
        return []
    text = str(path).strip()
    if text.startswith("$"):
        text = text[1:].lstrip(".")
    return [p for p in text.split(".") if p != ""]


def _step(value: Any, part: str) -> Any:
    if isinstance(value, dict):
        return value.get(part, _MISSING)
    if isinstance(value, list) and part.lstrip("-").isdigit():
        index = int(part)
        return value[index] if -len(value) <= index < len(value) else _MISSING
    return _MISSING


def get_path(body: Any, path: str | None, default: Any = None) -> Any:
    """The value at `path` (no wildcards), or `default` when any part is missing."""
    current = body
    for part in _parts(path):
        if part == "*":
            raise PermanentStepError(f"path {path!r}: '*' is only allowed in data_path", code=ErrorCode.CONFIG_INVALID)
        current = _step(current, part)
        if current is _MISSING:
            return default
    return current


def _walk(value: Any, parts: list[str]) -> Iterator[Any]:
    if not parts:
        yield value
        return
    head, rest = parts[0], parts[1:]
    if head == "*":
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            yield from _walk(child, rest)
        return
    child = _step(value, head)
    if child is not _MISSING:
        yield from _walk(child, rest)


def select_rows(body: Any, data_path: str | None) -> list[Any]:
    """The records of one response page.

    The value at `data_path` must be a list (its items are the rows), an object (one row) or absent/null
    (no rows). With `*`, the lists found under every match are concatenated. Without a data_path the
    body itself is the list (or the single row).
    """
    found: list[Any] = []
    for match in _walk(body, _parts(data_path)):
        if match is None:
            continue
        if isinstance(match, list):
            found.extend(match)
        elif isinstance(match, dict):
            found.append(match)
        else:
            raise PermanentStepError(
                f"data_path {data_path!r} points at a {type(match).__name__}, not a list of records",
                code=ErrorCode.PROVIDER_BAD_RESPONSE,
            )
    return found
