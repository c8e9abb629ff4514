"""SQL text from config, made safe: `{name}` placeholders may only name validated identifiers, and every
value reaches BigQuery as a typed query parameter (CALL arguments: typed values that
warehouse.procedures renders as safe literals).

    SELECT ... FROM `{source_table}` WHERE usage_date BETWEEN @start_date AND @end_date

A placeholder that is not an identifier of the step (`{start_date}`, a typo) is a config error that
says to use `@start_date` instead: values are never pasted into SQL text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from convergence.pipeline.errors import ErrorCode, PermanentStepError, invalid
from convergence.warehouse.query import infer_type as parameter_type

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SCALAR_TYPES = ("STRING", "INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC", "BOOL", "DATE", "TIMESTAMP", "DATETIME")
_TYPE_ALIASES = {"INTEGER": "INT64", "INT": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "DECIMAL": "NUMERIC"}



def render_identifiers(sql: str, identifiers: Mapping[str, str]) -> str:
    """Replace `{name}` with the validated identifier `identifiers[name]`; `{{`/`}}` are literal braces."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1).strip()
        if name in identifiers:
            return identifiers[name]
        allowed = ", ".join(f"{{{n}}}" for n in sorted(identifiers)) or "none"
        raise invalid(f"placeholder {token} in SQL: only identifiers can be placeholders ({allowed}); "
                       f"pass values as query parameters, e.g. @{name if _PARAM_NAME.match(name) else 'value'}")

    return _PLACEHOLDER.sub(substitute, sql)


def without_line_comments(sql: str) -> str:
    """The SQL without its whole-line `--` comments. Documentation comments in SQL files may mention
    `@parameters`, which the BigQuery emulator would otherwise count as parameters of the query."""
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def normalise_type(kind: Any) -> str:
    text = str(kind or "").strip().upper()
    text = _TYPE_ALIASES.get(text, text)
    if text not in SCALAR_TYPES:
        raise invalid(f"parameter type {kind!r} is not one of {', '.join(SCALAR_TYPES)}")
    return text


def infer_type(value: Any) -> str:
    """Like a query parameter's type, but an ISO date string is a DATE and any datetime a TIMESTAMP
    (values from YAML configs arrive as text)."""
    if isinstance(value, str) and _ISO_DATE.match(value):
        return "DATE"
    if isinstance(value, datetime):
        return "TIMESTAMP"
    try:
        return parameter_type("value", value)
    except TypeError:
        return "STRING"


def coerce(name: str, kind: str, value: Any) -> Any:
    """`value` as the Python value of BigQuery type `kind`; a PermanentStepError naming `name` if it is not."""
    if value is None:
        return None
    try:
        if kind == "STRING":
            return str(value)
        if kind == "BOOL":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("true", "false"):
                raise ValueError
            return text == "true"
        if kind == "INT64":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(str(value).strip()) if not isinstance(value, int | float) else int(value)
        if kind == "FLOAT64":
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if kind in ("NUMERIC", "BIGNUMERIC"):
            number = Decimal(str(value).strip())
            if not number.is_finite():
                raise ValueError
            return number
        if kind == "DATE":
            if isinstance(value, datetime):
                return value.date()
            if isinstance(value, date):
                return value
            text = str(value).strip()
            if not _ISO_DATE.match(text):
                raise ValueError
            return date.fromisoformat(text)
        if kind in ("TIMESTAMP", "DATETIME"):
            if isinstance(value, datetime):
                return value
            text = str(value).strip()
            if _ISO_DATE.match(text):
                text += "T00:00:00"
            if not _ISO_TIMESTAMP.match(text):
                raise ValueError
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
            if kind == "TIMESTAMP" and parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed
    except (ValueError, TypeError, InvalidOperation, OverflowError):
        pass
    raise PermanentStepError(f"parameter {name}: {str(value)[:60]!r} is not a valid {kind}",
                             code=ErrorCode.INVALID_PARAMETERS)


def parameter_specs(spec: Any) -> list[tuple[str, str, Any]]:
    """`{name: value}` or `{name: {type, value}}` or `[{name, type, value}]` -> [(name, type, value)]."""
    items: list[tuple[str, Any]] = []
    if spec is None:
        return []
    if isinstance(spec, Mapping):
        items = list(spec.items())
    elif isinstance(spec, list):
        for entry in spec:
            if not isinstance(entry, Mapping) or "name" not in entry:
                raise invalid("each parameter in a list needs a `name`")
            items.append((entry["name"], {k: v for k, v in entry.items() if k != "name"}))
    else:
        raise invalid("parameters must be a mapping or a list")
    out = []
    for name, raw in items:
        if not isinstance(name, str) or not _PARAM_NAME.match(name):
            raise invalid(f"parameter name {name!r} is not valid")
        if isinstance(raw, Mapping):
            value = raw.get("value", raw.get("default"))
            kind = normalise_type(raw["type"]) if raw.get("type") else infer_type(value)
        else:
            value = raw
            kind = infer_type(value)
        out.append((name, kind, coerce(name, kind, value)))
    return out


def query_parameters(specs: list[tuple[str, str, Any]]) -> list[Any]:
    """The specs as query parameters (made by the warehouse facade: processors never build them)."""
    from convergence.warehouse.facade import scalar_parameters

    return scalar_parameters(specs)
