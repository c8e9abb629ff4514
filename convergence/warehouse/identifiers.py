"""Validation of every name that is pasted into SQL or a BigQuery resource path.

Values always travel as query parameters; names cannot, so they are checked here first, before anything
reaches BigQuery. The rules are stricter than BigQuery's own (ASCII letters, digits, underscore; at most
128 characters): a name that passes can never break out of a backtick-quoted reference.
"""

from __future__ import annotations

import re

from convergence.pipeline.errors import invalid

MAX_NAME_LENGTH = 128

_ORG_SLUG = re.compile(r"[a-z0-9_]{3,50}")
_DATASET = re.compile(rf"[A-Za-z0-9_]{{1,{MAX_NAME_LENGTH}}}")
_TABLE = re.compile(rf"[A-Za-z_][A-Za-z0-9_]{{0,{MAX_NAME_LENGTH - 1}}}")
_COLUMN = _TABLE
_PROJECT = re.compile(r"[a-z][a-z0-9\-]{4,28}[a-z0-9]")
# BigQuery reserves these column prefixes (case-insensitive).
_RESERVED_COLUMN_PREFIXES = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__", "_colidentifier")


class InvalidIdentifier(ValueError):
    """A name that must not reach BigQuery (wrong characters, length or reserved)."""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(value: object, pattern: re.Pattern[str], what: str, rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidIdentifier(f"invalid {what} {_shown(value)}: {rule}")
    return value


def validate_org_slug(value: object) -> str:
    return _check(value, _ORG_SLUG, "org slug", "3-50 characters of a-z, 0-9 and _")


def validate_dataset(value: object) -> str:
    return _check(value, _DATASET, "dataset name", f"1-{MAX_NAME_LENGTH} characters of A-Z, a-z, 0-9 and _")


def validate_table(value: object) -> str:
    return _check(value, _TABLE, "table name",
                  f"1-{MAX_NAME_LENGTH} characters of A-Z, a-z, 0-9 and _, not starting with a digit")


def validate_column(value: object) -> str:
    name = _check(value, _COLUMN, "column name",
                  f"1-{MAX_NAME_LENGTH} characters of A-Z, a-z, 0-9 and _, not starting with a digit")
    if name.lower().startswith(_RESERVED_COLUMN_PREFIXES):
        raise InvalidIdentifier(f"invalid column name {name!r}: BigQuery reserves that prefix")
    return name


def validate_project(value: object) -> str:
    return _check(value, _PROJECT, "project id", "6-30 characters of a-z, 0-9 and -, starting with a letter")


def table_id(project: str, dataset: str, table: str) -> str:
    """`project.dataset.table`, validated (the form the client library takes)."""
    return f"{validate_project(project)}.{validate_dataset(dataset)}.{validate_table(table)}"


def table_ref(project: str, dataset: str, table: str) -> str:
    """The backtick-quoted, validated name for SQL: `project.dataset.table`."""
    return f"`{table_id(project, dataset, table)}`"


def dataset_ref(project: str, dataset: str) -> str:
    return f"`{validate_project(project)}.{validate_dataset(dataset)}`"


def column_ref(name: str, alias: str | None = None) -> str:
    """A backtick-quoted column, optionally qualified by a (validated) alias."""
    quoted = f"`{validate_column(name)}`"
    return f"{validate_table(alias)}.{quoted}" if alias else quoted


# -- names from step configs: a clear CONFIG_INVALID step error instead of InvalidIdentifier -----------------

_CONFIG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
# GCP project ids: 6-30 chars, lower-case letters, digits, hyphens; optionally domain-scoped (example.com:p).
_CONFIG_PROJECT = re.compile(r"^(?:[a-z0-9.\-]{1,63}:)?[a-z][a-z0-9\-]{4,28}[a-z0-9]$")


def identifier(name: object, what: str = "table") -> str:
    """A dataset, table, column or routine name from a step config that may be pasted into SQL."""
    if not isinstance(name, str) or not _CONFIG_NAME.match(name):
        raise invalid(f"{what} name {name!r} is not a valid BigQuery identifier")
    return name


def project_id(name: object, what: str = "project") -> str:
    if not isinstance(name, str) or not _CONFIG_PROJECT.match(name):
        raise invalid(f"{what} id {name!r} is not a valid GCP project id")
    return name
