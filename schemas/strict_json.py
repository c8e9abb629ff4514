"""Bytes -> JSON object, refusing what different parsers would read differently."""

from __future__ import annotations

import json
from typing import Any

from convergence.schemas.errors import MessageRejected, RejectCode


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers may keep different copies of a duplicated key: refuse instead of guessing.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MessageRejected(RejectCode.MALFORMED_JSON, f"duplicate key {_short(key)}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise MessageRejected(RejectCode.MALFORMED_JSON, f"{name} is not valid JSON")


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def loads_object(data: bytes, max_bytes: int, what: str = "message body") -> dict[str, Any]:
    """Decode a UTF-8 JSON object of at most ``max_bytes``; raise MessageRejected otherwise."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageRejected(RejectCode.MALFORMED_JSON, f"{what} must be bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise MessageRejected(RejectCode.PAYLOAD_TOO_LARGE, f"{what} is {len(data)} bytes; the limit is {max_bytes}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as error:
        raise MessageRejected(
            RejectCode.MALFORMED_JSON, f"{what} is not valid UTF-8 (bad byte at offset {error.start})"
        ) from None
    if not text.strip():
        raise MessageRejected(RejectCode.MALFORMED_JSON, f"{what} is empty")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as error:
        raise MessageRejected(
            RejectCode.MALFORMED_JSON,
            f"{what} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
        ) from None
    except RecursionError:
        raise MessageRejected(RejectCode.MALFORMED_JSON, f"{what} is nested too deeply") from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # "\ud800" parses, but no UTF-8 message (a republish, an event) can carry it
        raise MessageRejected(RejectCode.MALFORMED_JSON, f"{what} holds a lone UTF-16 surrogate") from None
    if not isinstance(value, dict):
        raise MessageRejected(RejectCode.SCHEMA_INVALID, f"{what} must be a JSON object, got {json_type(value)}")
    return value


def json_type(value: Any) -> str:
    """JSON Schema's name for the type of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
