"""Keep secrets out of results, errors and events: any occurrence of a known secret is replaced."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MASK = "[REDACTED]"


def redact(value: Any, secrets: Mapping[str, str] | Iterable[str]) -> Any:
    values = [s for s in (secrets.values() if isinstance(secrets, Mapping) else secrets) if s and len(s) >= 4]
    if not values:
        return value
    return _redact(value, values)


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v, secrets) for v in value)
    return value
