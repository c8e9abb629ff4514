"""Google's SQL front end (ZetaSQL, the analyzer BigQuery's GoogleSQL is built on), set up as BigQuery.

bqemulator runs DuckDB and accepts SQL that BigQuery refuses, so a statement proven only there proves
little. This module analyzes statements the way BigQuery's front end does: maximum language features,
PRODUCT_EXTERNAL type names, QUALIFY reserved (BigQuery reserves it, which lets QUALIFY stand without
WHERE), every query parameter declared with its type, and a catalog of the tables the statement names.

ZetaSQL comes from PyPI's `zetasql` (a WebAssembly build run by wasmtime). Compiling the module costs about
20 s of CPU, so one `GoogleSql` is built lazily per process and wasmtime's compilation cache is turned on
(a later process loads the compiled module in about 2 s); each statement then takes milliseconds. The
package is an optional dependency (extra `sqlcheck`, included in `dev`).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# BigQuery REST type names -> ZetaSQL TypeKind names (INTEGER/FLOAT/BOOLEAN are the legacy spellings).
_TYPE_KINDS = {
    "STRING": "TYPE_STRING", "INT64": "TYPE_INT64", "INTEGER": "TYPE_INT64", "FLOAT64": "TYPE_DOUBLE",
    "FLOAT": "TYPE_DOUBLE", "NUMERIC": "TYPE_NUMERIC", "BIGNUMERIC": "TYPE_BIGNUMERIC",
    "BIGDECIMAL": "TYPE_BIGNUMERIC", "DECIMAL": "TYPE_NUMERIC", "BOOL": "TYPE_BOOL", "BOOLEAN": "TYPE_BOOL",
    "DATE": "TYPE_DATE", "DATETIME": "TYPE_DATETIME", "TIMESTAMP": "TYPE_TIMESTAMP", "TIME": "TYPE_TIME",
    "BYTES": "TYPE_BYTES", "JSON": "TYPE_JSON", "GEOGRAPHY": "TYPE_GEOGRAPHY", "INTERVAL": "TYPE_INTERVAL",
}  # fmt: skip

# Statements that open a script: they go through ZetaSQL's script parser, not the statement analyzer.
_SCRIPT_START = re.compile(r"^\s*(DECLARE|BEGIN|IF|LOOP|WHILE|FOR|REPEAT|CALL|EXECUTE\s+IMMEDIATE|"
                           r"CREATE\s+(OR\s+REPLACE\s+)?PROCEDURE)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


@dataclass(frozen=True)
class KnownDifference:
    """A place where ZetaSQL refuses what BigQuery accepts; each entry names where that is documented."""

    pattern: str  # regex over the analyzer's message
    reason: str
    source: str

    def matches(self, message: str) -> bool:
        return re.search(self.pattern, message) is not None


# Where ZetaSQL and BigQuery really differ. No blanket skips: each entry matches one message shape.
KNOWN_DIFFERENCES: tuple[KnownDifference, ...] = (
    KnownDifference(
        pattern=r"Statement not supported: (CreateSchemaStatement|AlterSchemaStatement)",
        reason="BigQuery's CREATE SCHEMA (a dataset) is BigQuery DDL that the open-source analyzer does not "
               "resolve; the parser accepts it.",
        source="BigQuery GoogleSQL reference, 'Data definition language statements': CREATE SCHEMA statement",
    ),
)


@dataclass(frozen=True)
class TableSchema:
    """One table as BigQuery describes it: `project.dataset.table`, its REST schema fields, partitioning."""

    table_id: str
    fields: Sequence[Mapping[str, Any]]
    ingestion_time_partitioned: bool = False

    @property
    def short_name(self) -> str:
        return self.table_id.rsplit(".", 1)[-1]

    @property
    def dataset_id(self) -> str:
        return self.table_id.rsplit(".", 1)[0]

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> TableSchema | None:
        """From a `bigquery#table` REST resource (tables.insert, tables.get, tables.patch)."""
        ref = resource.get("tableReference") or {}
        if not all(ref.get(k) for k in ("projectId", "datasetId", "tableId")):
            return None
        partitioning = resource.get("timePartitioning") or {}
        return cls(
            table_id=f"{ref['projectId']}.{ref['datasetId']}.{ref['tableId']}",
            fields=list((resource.get("schema") or {}).get("fields") or []),
            ingestion_time_partitioned=bool(partitioning) and not partitioning.get("field"),
        )


@dataclass(frozen=True)
class Refusal:
    sql: str
    message: str


@dataclass
class Statement:
    """One statement as sent: its text, its parameters' REST types (`parameterType`), its default dataset."""

    sql: str
    parameters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_dataset: str | None = None  # "project.dataset"

    @property
    def is_script(self) -> bool:
        text = _COMMENT.sub(" ", self.sql).strip().rstrip(";")
        return bool(_SCRIPT_START.match(text)) or ";" in _strip_strings(text)


def _strip_strings(sql: str) -> str:
    return re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`", "''", sql)


class GoogleSql:
    """ZetaSQL with BigQuery's settings. Build once per process (`GoogleSql.shared()`)."""

    _shared: GoogleSql | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            _enable_compilation_cache()
            from zetasql import api, types
        except ImportError as error:  # pragma: no cover - the message is the behaviour
            raise RuntimeError("Google's SQL analyzer is not installed: pip install 'convergence[sqlcheck]'"
                               ) from error
        self._api, self._types = api, types
        options = types.LanguageOptions.maximum_features()
        options.product_mode = types.ProductMode.PRODUCT_EXTERNAL
        options.reserved_keywords = ["QUALIFY"]
        self.language = options
        self._builtins = types.ZetaSQLBuiltinFunctionOptions(language_options=options)
        self._parser = api.Parser(options)

    @classmethod
    def shared(cls) -> GoogleSql:
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    # ---- types ----

    def _type(self, spec: Mapping[str, Any]) -> Any:
        """A ZetaSQL type from a REST schema field or a query parameter's `parameterType`."""
        factory, kinds = self._api.TypeFactory, self._types.TypeKind
        kind = str(spec.get("type", "STRING")).upper()
        if kind == "ARRAY":  # parameterType form
            return factory.create_array_type(self._type(spec.get("arrayType") or {}))
        if kind in ("STRUCT", "RECORD"):
            members = spec.get("fields")
            if members is not None:  # schema field form
                struct = factory.create_struct_type([(m["name"], self._field_type(m)) for m in members])
            else:  # parameterType form
                struct = factory.create_struct_type(
                    [(m.get("name") or "", self._type(m.get("type") or {})) for m in spec.get("structTypes") or []])
            return struct
        if kind == "RANGE":
            return factory.create_simple_type(kinds.TYPE_STRING)
        return factory.create_simple_type(getattr(kinds, _TYPE_KINDS.get(kind, "TYPE_STRING")))

    def _field_type(self, field_spec: Mapping[str, Any]) -> Any:
        base = self._type(field_spec)
        if str(field_spec.get("mode", "")).upper() == "REPEATED":
            return self._api.TypeFactory.create_array_type(base)
        return base

    # ---- catalog ----

    def _catalog(self, statement: Statement, tables: Mapping[str, TableSchema]) -> Any:
        """A catalog of the tables the statement can name: by full id, and by short or `dataset.table` name
        where the statement's default dataset holds them."""
        builder = self._api.CatalogBuilder("bigquery")
        words = set(_WORD.findall(statement.sql))
        added: set[str] = set()
        for table in _candidates(statement, words, tables):
            names = [table.table_id]
            if statement.default_dataset == table.dataset_id:
                names += [table.short_name, f"{table.table_id.split('.')[1]}.{table.short_name}"]
            for name in names:
                if name in added:
                    continue
                added.add(name)
                table_builder = self._api.TableBuilder(name)
                for column in table.fields:
                    table_builder.add_column(column["name"], self._field_type(column))
                if table.ingestion_time_partitioned:
                    table_builder.add_column("_PARTITIONTIME", self._types.TypeKind.TYPE_TIMESTAMP)
                    table_builder.add_column("_PARTITIONDATE", self._types.TypeKind.TYPE_DATE)
                builder.add_table(table_builder.build())
        return builder.with_builtin_functions(self._builtins).build()

    # ---- analysis ----

    def parse_script(self, sql: str) -> Any:
        """The script's syntax tree (nodes carry byte ranges); raises on a syntax error."""
        return self._parser.parse_script(sql)

    def check(self, statement: Statement, tables: Mapping[str, TableSchema] | None = None) -> Refusal | None:
        """None if BigQuery's front end accepts the statement, else the refusal (known differences excused)."""
        message = self._refusal(statement, tables or {})
        if message is None or any(known.matches(message) for known in KNOWN_DIFFERENCES):
            return None
        return Refusal(statement.sql, message)

    def output_columns(self, statement: Statement, tables: Mapping[str, TableSchema] | None = None) -> list[str]:
        """The names of the columns a query produces; raises if the analyzer refuses it."""
        resolved = self._analyze(statement, tables or {})
        return [column.name for column in getattr(resolved, "output_column_list", None) or []]

    def _analyze(self, statement: Statement, tables: Mapping[str, TableSchema]) -> Any:
        options = self._types.AnalyzerOptions(
            language_options=self.language,  # ONE_LINE: the message ends with "[at line:column]"
            error_message_mode=self._types.ErrorMessageMode.ERROR_MESSAGE_ONE_LINE,
            query_parameters=[self._types.AnalyzerOptions.QueryParameter(name=name, type=self._type(spec))
                              for name, spec in statement.parameters.items()])
        return self._api.Analyzer(options, self._catalog(statement, tables)).analyze_statement(statement.sql)

    def _refusal(self, statement: Statement, tables: Mapping[str, TableSchema]) -> str | None:
        try:
            if statement.is_script:
                self._parser.parse_script(statement.sql)
            else:
                self._analyze(statement, tables)
        except Exception as error:  # noqa: BLE001 - every refusal is reported, whatever its class
            return str(error) or type(error).__name__
        return None


def _enable_compilation_cache() -> None:
    """wasmtime's own cache of compiled modules (~/.cache/wasmtime, keyed by the module's bytes, the compiler
    settings and the wasmtime version). zetasql builds its wasmtime Config itself, so its class is wrapped."""
    from zetasql.core import wasm_client

    base = wasm_client.Config
    if getattr(base, "caches_compilation", False):
        return

    class CachingConfig(base):  # type: ignore[misc,valid-type]
        caches_compilation = True

        def __init__(self) -> None:
            super().__init__()
            with contextlib.suppress(Exception):  # no cache (unwritable home): compile as before
                self.cache = True

    wasm_client.Config = CachingConfig


def _candidates(statement: Statement, words: set[str], tables: Mapping[str, TableSchema]) -> Iterable[TableSchema]:
    for table in tables.values():
        if table.short_name.rstrip("*") not in words:  # `x_*`: a wildcard table
            continue
        dataset = table.table_id.split(".")[1]
        if (table.table_id in statement.sql or f"{dataset}.{table.short_name}" in statement.sql
                or statement.default_dataset == table.dataset_id):
            yield table


def index_tables(tables: Iterable[TableSchema]) -> dict[str, TableSchema]:
    """By table id; a later schema of the same table wins, keeping columns only the earlier one had
    (schemas evolve additively)."""
    out: dict[str, TableSchema] = {}
    for table in tables:
        earlier = out.get(table.table_id)
        if earlier is not None and table.fields:
            names = {f["name"] for f in table.fields}
            merged = list(table.fields) + [f for f in earlier.fields if f["name"] not in names]
            table = TableSchema(table.table_id, merged,
                                table.ingestion_time_partitioned or earlier.ingestion_time_partitioned)
        elif earlier is not None:
            table = earlier
        out[table.table_id] = table
    return out
