"""The schema files, loaded once from package data, and a validator that explains failures briefly."""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from convergence.schemas.errors import MessageRejected, RejectCode
from convergence.schemas.strict_json import json_type

RUN_REQUEST_V1 = "run_request.v1.json"
PIPELINE_EVENT_V1 = "pipeline_event.v1.json"
RUN_REQUEST_V1_AVRO = "run_request.v1.avsc"

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?P<fraction>\.\d{1,9})?(?P<offset>[Zz]|[+-]\d{2}:\d{2})$"
)
_MAX_ERRORS = 5  # enough to fix a message in one go, short enough for a log line or a 400 body
_PREVIEW = 40


def is_rfc3339(value: object) -> bool:
    """RFC 3339 date-time with an offset (jsonschema checks 'date-time' only with an extra package)."""
    if not isinstance(value, str):
        return True  # format applies to strings only; "type" reports the rest
    match = _RFC3339.match(value)
    if match is None:
        return False
    fraction = match["fraction"] or ""
    text = value[: match.start("fraction")] if fraction else value[: match.start("offset")]
    try:
        datetime.fromisoformat(text.replace("t", "T"))
    except ValueError:
        return False
    return True


FORMAT_CHECKER = FormatChecker(formats=())
FORMAT_CHECKER.checks("date-time")(is_rfc3339)


@cache
def schema_text(name: str) -> str:
    return resources.files("convergence.schemas").joinpath(name).read_text(encoding="utf-8")


@cache
def schema(name: str) -> dict[str, Any]:
    return json.loads(schema_text(name))


@cache
def validator(name: str) -> Draft202012Validator:
    document = schema(name)
    Draft202012Validator.check_schema(document)
    return Draft202012Validator(document, format_checker=FORMAT_CHECKER)


def problems(name: str, data: Any) -> list[tuple[tuple[Any, ...], str]]:
    """Every failure as (field path, short sentence), in field order; empty when valid."""
    errors = sorted(_leaves(list(validator(name).iter_errors(data))), key=_order)
    found = [(_field_of(error), describe(error)) for error in errors]
    return list(dict.fromkeys(found))


def reject(found: list[tuple[tuple[Any, ...], str]], code: RejectCode = RejectCode.SCHEMA_INVALID) -> None:
    """Raise MessageRejected for ``found`` (if any): a few sentences, never a full value."""
    if not found:
        return
    sentences = [sentence for _, sentence in found]
    extra = f" (and {len(sentences) - _MAX_ERRORS} more)" if len(sentences) > _MAX_ERRORS else ""
    raise MessageRejected(code, "; ".join(sentences[:_MAX_ERRORS]) + extra)


def check(name: str, data: Any) -> None:
    """Raise MessageRejected(SCHEMA_INVALID) naming each failing field; values are never echoed in full."""
    reject(problems(name, data))


def _missing(error: ValidationError) -> list[str]:
    instance = error.instance if isinstance(error.instance, dict) else {}
    return [name for name in error.validator_value if name not in instance]


def _field_of(error: ValidationError) -> tuple[Any, ...]:
    """The field a failure is about; for a missing field, the field itself rather than its parent."""
    path = tuple(error.absolute_path)
    if error.validator == "required":
        return (*path, *_missing(error)[:1])
    return path


def _order(error: ValidationError) -> tuple[list[str], str]:
    return [str(part) for part in _field_of(error)], str(error.validator)


def _leaves(errors: list[ValidationError]) -> list[ValidationError]:
    """Replace oneOf/if-then wrappers by the concrete error inside them."""
    result: list[ValidationError] = []
    for error in errors:
        if error.validator in ("oneOf", "anyOf") and error.context:
            # The branch that got deepest explains the failure best (e.g. the object branch of error).
            deepest = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
            result.append(deepest)
        else:
            result.append(error)
    return result


def field_path(path: Any) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else str(p)[:_PREVIEW] for p in path]
    return ".".join(parts).replace(".[", "[") or "(body)"


def preview(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= _PREVIEW else value[:_PREVIEW] + "...")
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    return json.dumps(value)


def describe(error: ValidationError) -> str:
    """One short sentence per failure, starting with the dotted field path."""
    path = list(error.absolute_path)
    kind, rule, value = error.validator, error.validator_value, error.instance
    secret_ish = bool(path) and path[0] == "parameters"  # parameter values may be sensitive: never shown
    shown = "value" if secret_ish else preview(value)
    if kind == "required":
        missing = _missing(error)
        if len(missing) == 1:
            return f"{field_path([*path, missing[0]])}: required field is missing"
        return f"{field_path(path)}: required fields are missing: {', '.join(missing)}"
    if kind == "additionalProperties":
        extras = sorted(set(value) - set(error.schema.get("properties", {})))
        names = ", ".join(repr(str(name)[:_PREVIEW]) for name in extras[:5])
        return f"{field_path(path)}: unknown field(s) {names}"
    if "propertyNames" in error.absolute_schema_path:
        reason = f"must match {rule}" if kind == "pattern" else "is reserved"
        return f"{field_path(path)}: name {preview(value)} {reason}"
    if kind == "type":
        expected = rule if isinstance(rule, str) else " or ".join(rule)
        return f"{field_path(path)}: expected {expected}, got {json_type(value)}"
    if kind in ("enum", "const"):
        allowed = [rule] if kind == "const" else rule
        choices = ", ".join(json.dumps(choice) for choice in allowed)
        return f"{field_path(path)}: {shown} is not one of {choices}"
    if kind == "pattern":
        return f"{field_path(path)}: {shown} does not match {rule}"
    if kind == "format":
        return f"{field_path(path)}: {shown} is not a valid {rule} (RFC 3339 with offset)"
    if kind in ("maxLength", "minLength"):
        limit = "at most" if kind == "maxLength" else "at least"
        return f"{field_path(path)}: must be {limit} {rule} characters (got {len(value)})"
    if kind in ("maxProperties", "minProperties"):
        limit = "at most" if kind == "maxProperties" else "at least"
        return f"{field_path(path)}: must have {limit} {rule} entries (got {len(value)})"
    if kind in ("minimum", "maximum"):
        return f"{field_path(path)}: {shown} must be {'>=' if kind == 'minimum' else '<='} {rule}"
    if kind == "not":
        return f"{field_path(path)}: {shown} is not allowed"
    return f"{field_path(path)}: {error.message[:120]}"
