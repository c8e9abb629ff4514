"""`convergence validate`, SQL part: every statement the configs carry, analyzed by Google's SQL front end
(warehouse.googlesql) against the tables their JSON schemas describe, before it ever runs.

What is analyzed, rendered as the processor renders it at run time:
- `generic.local_bq_transformer` steps: `sql_file` or inline `query`, identifiers `{project_id}`,
  `{org_dataset}`, `{dataset}`; parameters @org_slug, @run_id (STRING), @start_date, @end_date (DATE) and
  the step's `parameters`;
- `gcp.bq_etl` steps: `source.query_file` or `source.query`, identifiers `{source_table}`,
  `{source_project}`, `{source_dataset}`, `{partition_filter}`; @start_date, @end_date, @org_slug and
  `source.parameters`;
- stored procedures (configs/system/procedures): the whole script through the script parser, each query
  and DML statement of its body (arguments and variables as typed parameters), and each
  `EXECUTE IMMEDIATE [FORMAT(...)]` statement rendered with the arguments the calling pipelines pass.

Placeholders get representative valid names (the settings' project, the dataset of an org `acme`). A step
parameter is typed as the processor types it: its `type`, else the type of its value (an ISO date is a
DATE), the value resolved with representative run names; a value that only the run can resolve and that
has no `type` is typed STRING, as text is. The catalog: every schema file under configs/ as a table of the
org's dataset (by file name, and by each `table` a step pairs with it), the bootstrap schemas as central
tables, the ELT raw table schema for api_extractor destinations without one, and the published schema of
the standard billing export for billing export sources. Errors carry the file and line of the refused
statement (the line ZetaSQL reports, mapped back into the file; for inline YAML queries, the YAML line).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from convergence.pipeline.context import PlaceholderError, resolve_placeholders
from convergence.pipeline.errors import ConfigError, ConfigProblem, StepError
from convergence.pipeline.loader import PipelineLoader
from convergence.pipeline.models import PipelineConfig, StepConfig
from convergence.pipeline.validation import pipeline_files

TRANSFORMER = "generic.local_bq_transformer"
BQ_ETL = "gcp.bq_etl"
API_EXTRACTOR = "generic.api_extractor"
PROCEDURE_EXECUTOR = "generic.procedure_executor"
ELT_SCHEMA = Path("generic") / "schemas" / "api_raw.json"
BOOTSTRAP_SCHEMAS = Path("setup") / "bootstrap" / "schemas"
# Standard usage cost export tables are named gcp_billing_export_v1_<BILLING_ACCOUNT_ID> (Google Cloud
# Billing docs, "Structure of Standard usage cost data").
_BILLING_EXPORT_TABLE = re.compile(r"^gcp_billing_export_v1_")
_LOCATION = re.compile(r"\s*\[at (\d+):(\d+)\]\s*$")
_STATUS = re.compile(r"^\[[A-Z_]+\]\s*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PROC_HEADER = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?PROCEDURE\s+`?[^`(\s]+`?\s*\(", re.IGNORECASE)
_FORMAT_SPEC = re.compile(r"%([-+ #0']*\d*(?:\.\d+)?)([A-Za-z%])")


@dataclass(frozen=True)
class SqlNames:
    """Representative run names the configs' SQL is rendered with."""

    project_id: str = "convergence-local"
    org_slug: str = "acme"
    org_dataset: str = "acme_local"
    central_dataset: str = "organizations"
    source_project: str = "customer-billing-project"  # the customer's project when a config leaves it empty
    run_id: str = "validate-run"
    start_date: str = "2026-01-01"
    end_date: str = "2026-01-31"

    @classmethod
    def from_settings(cls, settings: Any) -> SqlNames:
        return cls(project_id=settings.gcp_project_id, org_dataset=settings.org_dataset(cls.org_slug),
                   central_dataset=settings.central_dataset)

    def lookup(self, config: PipelineConfig) -> dict[str, Any]:
        return {**config.variables, "org_slug": self.org_slug, "run_id": self.run_id,
                "pipeline_id": config.pipeline_id, "trigger": "validate", "project_id": self.project_id,
                "org_dataset": self.org_dataset, "central_dataset": self.central_dataset,
                "start_date": self.start_date, "end_date": self.end_date}


@dataclass
class SqlCheckReport:
    statements: int = 0
    problems: list[ConfigProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the analysis did not run
    seconds: float = 0.0

    def summary(self) -> str:
        if self.skipped:
            return f"sql: check skipped: {self.skipped}"
        if not self.statements:
            return "sql: the configs carry no SQL"
        return (f"sql: {self.statements} statement(s) analyzed with Google's SQL front end in {self.seconds:.1f} s, "
                f"{len(self.problems)} refused")


@dataclass(frozen=True)
class _Sql:
    """One statement to analyze and where it comes from: statement line n is file line `first_line + n - 1`
    (`exact_lines` False: folded YAML text, every error is reported at `first_line`)."""

    sql: str
    parameters: Mapping[str, Mapping[str, Any]]
    file: str
    first_line: int
    exact_lines: bool = True
    destination: _Destination | None = None  # a transformer's SELECT: the table it is written to
    parse_only: bool = False  # it reads a table whose schema is unknown: its syntax is checked

    def problem(self, message: str) -> ConfigProblem:
        text = _STATUS.sub("", message.strip())
        # Without a location (some refusals carry none): the line where the statement's text starts.
        leading = len(self.sql) - len(self.sql.lstrip())
        line = self.first_line + (self.sql[:leading].count("\n") if self.exact_lines else 0)
        found = _LOCATION.search(text)
        if found:
            text = text[:found.start()]
            if self.exact_lines:
                line = self.first_line + int(found.group(1)) - 1
        return ConfigProblem(text, file=self.file, line=line)


@dataclass(frozen=True)
class _Destination:
    """A transformer's destination, as local_bq_transformer writes it."""

    table_id: str
    fields: list[dict[str, Any]]
    columns: list[str] | None  # destination.columns: the columns named explicitly
    mode: str
    key_columns: list[str]
    date_column: str | None
    file: str  # the pipeline, for errors
    path: str
    line: int

    def problems(self, produced: list[str]) -> list[str]:
        """What local_bq_transformer refuses before writing, given the columns the SELECT produces."""
        known = {str(f["name"]) for f in self.fields}
        extra = [c for c in produced if c not in known]
        if extra:
            return [f"the SELECT produces columns the destination does not have: {extra}"]
        required = [str(f["name"]) for f in self.fields if str(f.get("mode", "")).upper() == "REQUIRED"]
        missing = [c for c in required if c not in produced]
        if missing and not self.columns:
            return [f"the SELECT does not produce the destination's REQUIRED columns {missing}"]
        columns = self.columns or produced
        out = []
        if self.mode == "merge" and (not self.key_columns or any(k not in columns for k in self.key_columns)):
            out.append("write_mode merge needs destination.key_columns among the destination columns")
        if self.mode == "range_replace" and self.date_column not in columns:
            out.append(f"date_column {self.date_column} is not a destination column")
        return out

    def insert(self, select: str, produced: list[str]) -> str:
        """The INSERT local_bq_transformer sends in write_mode append (the other modes insert the same
        columns through MERGE ... INSERT): it checks each column's type against the destination's."""
        column_list = ", ".join(f"`{c}`" for c in (self.columns or produced))
        sql = f"INSERT INTO `{self.table_id}` ({column_list})\nSELECT {column_list} FROM (\n{select}\n) AS src"
        if self.mode == "range_replace":  # the replaced range, as the MERGE's source selects it
            sql += f"\nWHERE src.`{self.date_column}` BETWEEN @start_date AND @end_date"
        return sql


# ---- the catalog -----------------------------------------------------------------------------------------


def _schema_fields(path: Path) -> list[dict[str, Any]]:
    from convergence.warehouse.tables import load_schema

    return [f.to_api_repr() for f in load_schema(path)]


class _Catalog:
    def __init__(self, configs_dir: Path, names: SqlNames, report: SqlCheckReport):
        self.configs_dir, self.names, self.report = configs_dir, names, report
        self.tables: list[Any] = []
        self._fields: dict[Path, list[dict[str, Any]] | None] = {}

    def fields(self, path: Path) -> list[dict[str, Any]] | None:
        path = path.resolve()
        if path not in self._fields:
            from convergence.warehouse.tables import SchemaFileError

            try:
                self._fields[path] = _schema_fields(path)
            except SchemaFileError as error:
                self._fields[path] = None
                self.report.problems.append(ConfigProblem(f"schema not usable: {error}", file=_display(path,
                                                                                                   self.configs_dir)))
        return self._fields[path]

    def add(self, table_id: str, path: Path, *, ingestion_time: bool = False) -> None:
        from convergence.warehouse.googlesql import TableSchema

        columns = self.fields(path)
        if columns is not None:
            self.tables.append(TableSchema(table_id, columns, ingestion_time))

    def add_schema_dirs(self) -> None:
        bootstrap = (self.configs_dir / BOOTSTRAP_SCHEMAS).resolve()
        for path in sorted(self.configs_dir.rglob("schemas/*.json")):
            central = path.resolve().parent == bootstrap
            dataset = self.names.central_dataset if central else self.names.org_dataset
            self.add(f"{self.names.project_id}.{dataset}.{path.stem}", path,
                     ingestion_time=central and self._bootstrap_ingestion_time(path.stem))

    def _bootstrap_ingestion_time(self, table: str) -> bool:
        try:
            config = yaml.safe_load((self.configs_dir / "setup" / "bootstrap" / "config.yml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            return False
        partitioning = ((config.get("tables") or {}).get(table) or {}).get("partitioning")
        return isinstance(partitioning, Mapping) and not partitioning.get("field")

    def add_step_tables(self, step: StepConfig, names: Mapping[str, Any]) -> None:
        """Tables a step pairs with a schema file (`{table, schema_file}` anywhere in its config), and the ELT
        raw table of an api_extractor destination that names none."""
        base = self.configs_dir.parent
        for item in _mappings(step.config):
            table = _resolved(item.get("table"), names)
            if not isinstance(table, str) or not _IDENT.fullmatch(table):
                continue
            schema_file = _resolved(item.get("schema_file"), names)
            if isinstance(schema_file, str) and (base / schema_file).is_file():
                partitioning = item.get("partitioning")
                ingestion = isinstance(partitioning, Mapping) and not partitioning.get("field")
                self.add(f"{self.names.project_id}.{self.names.org_dataset}.{table}", base / schema_file,
                         ingestion_time=ingestion)
            elif schema_file is None and step.ps_type == API_EXTRACTOR and item is step.config.get("destination"):
                self.add(f"{self.names.project_id}.{self.names.org_dataset}.{table}", self.configs_dir / ELT_SCHEMA)

    def add_billing_export(self, table_id: str) -> None:
        """The customer's standard usage cost export, with the published schema (the local stand-in's)."""
        from convergence.devstack.providers.gcp_server import BILLING_EXPORT_SCHEMA
        from convergence.warehouse.googlesql import TableSchema

        columns = list(BILLING_EXPORT_SCHEMA)
        if table_id.endswith("*"):  # a wildcard table has the _TABLE_SUFFIX pseudo-column
            columns.append({"name": "_TABLE_SUFFIX", "type": "STRING", "mode": "NULLABLE"})
        self.tables.append(TableSchema(table_id, columns, ingestion_time_partitioned=True))


def _mappings(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _mappings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _mappings(item)


def _resolved(value: Any, names: Mapping[str, Any]) -> Any:
    try:
        return resolve_placeholders(value, names)
    except PlaceholderError:
        return None


def _display(path: Path, configs_dir: Path) -> str:
    try:
        return str(Path("configs") / path.resolve().relative_to(configs_dir.resolve()))
    except ValueError:
        return str(path)


# ---- statements from pipelines -----------------------------------------------------------------------------


def _blank_line_comments(sql: str) -> str:
    """templating.without_line_comments, keeping an empty line for each comment line so lines still match
    the file (the SQL sent differs only by those empty lines)."""
    return "\n".join("" if line.lstrip().startswith("--") else line for line in sql.splitlines())


def _parameter_types(spec: Any, names: Mapping[str, Any]) -> dict[str, str]:
    """Types of a step's `parameters`, as templating.parameter_specs gives them at run time."""
    from convergence.processors.sql.templating import infer_type, normalise_type

    items: list[tuple[Any, Any]] = []  # names are checked below
    if isinstance(spec, Mapping):
        items = list(spec.items())
    elif isinstance(spec, list):
        items = [(entry.get("name"), {k: v for k, v in entry.items() if k != "name"})
                 for entry in spec if isinstance(entry, Mapping)]
    out = {}
    for name, raw in items:
        if not isinstance(name, str):
            continue
        if isinstance(raw, Mapping) and raw.get("type"):
            out[name] = normalise_type(raw["type"])
            continue
        value = raw.get("value", raw.get("default")) if isinstance(raw, Mapping) else raw
        resolved = _resolved(value, names)
        out[name] = infer_type(resolved if resolved is not None else str(value))
    return out


class _Collector:
    def __init__(self, configs_dir: Path, names: SqlNames, report: SqlCheckReport, catalog: _Catalog):
        self.configs_dir, self.names, self.report, self.catalog = configs_dir, names, report, catalog
        self.base = configs_dir.parent
        self.statements: list[_Sql] = []
        self.scripts: list[_Sql] = []  # procedure scripts: their own statements are found once parsed
        self.procedure_args: dict[str, dict[str, str]] = {}

    def pipeline(self, path: Path, config: PipelineConfig) -> None:
        display = _display(path, self.configs_dir)
        names = self.names.lookup(config)
        for index, step in enumerate(config.steps):
            self.catalog.add_step_tables(step, names)
            try:
                if step.ps_type == TRANSFORMER:
                    self._transformer(path, display, index, step, names)
                elif step.ps_type == BQ_ETL:
                    self._bq_etl(path, display, index, step, names)
                elif step.ps_type == PROCEDURE_EXECUTOR:
                    self._procedure_call(step, names)
            except StepError as error:
                self.report.problems.append(ConfigProblem(str(error), f"steps.{index}.config", display))

    def _text(self, path: Path, display: str, keys: tuple[Any, ...], config: Mapping[str, Any], inline: str,
              file_key: str, names: Mapping[str, Any]) -> tuple[str, str, int, bool] | None:
        """(SQL, file shown in errors, its first line, lines exact) of an inline query or a query file."""
        query = config.get(inline)
        if isinstance(query, str):
            line, exact = _yaml_value_line(path, (*keys, inline))
            return query, display, line, exact
        file = _resolved(config.get(file_key), names)
        if not isinstance(file, str):
            return None  # named by run parameters, or missing: reference_problems reports what it can
        target = (self.base / file).resolve()
        if not target.is_file() or not target.is_relative_to(self.base.resolve()):
            return None
        return target.read_text(encoding="utf-8"), _display(target, self.configs_dir), 1, True

    def _render(self, text: tuple[str, str, int, bool], identifiers: Mapping[str, str],
                parameters: Mapping[str, str], destination: _Destination | None = None, *,
                parse_only: bool = False) -> None:
        from convergence.processors.sql.templating import render_identifiers

        sql, file, first_line, exact = text
        sql = _blank_line_comments(sql)
        try:
            rendered = render_identifiers(sql, identifiers)
        except StepError as error:
            token = re.search(r"placeholder (\{[^}]*\})", str(error))
            offset = sql[:sql.find(token.group(1))].count("\n") if token and token.group(1) in sql else 0
            self.report.problems.append(ConfigProblem(str(error), file=file,
                                                      line=first_line + (offset if exact else 0)))
            return
        body = rendered.rstrip().rstrip(";").rstrip()
        if ";" in re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "''", body):
            self.report.problems.append(ConfigProblem("the query must be a single SELECT statement", file=file,
                                                      line=first_line))
            return
        self.statements.append(_Sql(body, {k: {"type": v} for k, v in parameters.items()}, file, first_line, exact,
                                    destination, parse_only))

    def _transformer(self, path: Path, display: str, index: int, step: StepConfig, names: Mapping[str, Any]) -> None:
        text = self._text(path, display, ("steps", index, "config"), step.config, "query", "sql_file", names)
        if text is None:
            return
        parameters = {"org_slug": "STRING", "run_id": "STRING", "start_date": "DATE", "end_date": "DATE"}
        parameters.update(_parameter_types(step.config.get("parameters"), names))
        dataset = self.names.org_dataset
        self._render(text, {"project_id": self.names.project_id, "org_dataset": dataset, "dataset": dataset},
                     parameters, self._destination(step, names, display, path, index))

    def _destination(self, step: StepConfig, names: Mapping[str, Any], display: str, path: Path,
                     index: int) -> _Destination | None:
        from convergence.processors.generic._common import write_mode

        destination = _resolved(step.config.get("destination"), names)
        if not isinstance(destination, Mapping):
            return None
        table, schema_file = destination.get("table"), destination.get("schema_file")
        if not (isinstance(table, str) and _IDENT.fullmatch(table) and isinstance(schema_file, str)):
            return None  # an existing table: its columns are known only at run time
        fields = self.catalog.fields(self.base / schema_file) if (self.base / schema_file).is_file() else None
        if fields is None:
            return None
        columns = destination.get("columns")
        return _Destination(f"{self.names.project_id}.{self.names.org_dataset}.{table}", fields,
                            [str(c) for c in columns] if isinstance(columns, list) and columns else None,
                            write_mode(destination.get("write_mode"), "append"),
                            [str(k) for k in destination.get("key_columns") or []],
                            destination.get("date_column"), display, f"steps.{index}.config.destination",
                            _yaml_value_line(path, ("steps", index, "config", "destination"))[0])

    def _bq_etl(self, path: Path, display: str, index: int, step: StepConfig, names: Mapping[str, Any]) -> None:
        source = step.config.get("source") or {}
        if not isinstance(source, Mapping):
            return
        text = self._text(path, display, ("steps", index, "config", "source"), source, "query", "query_file", names)
        if text is None:
            return
        project = _resolved(source.get("project"), names) or self.names.source_project
        dataset, table = _resolved(source.get("dataset"), names), _resolved(source.get("table"), names)
        if not (isinstance(dataset, str) and isinstance(table, str) and dataset and table):
            self.report.notes.append(f"{display}: steps.{index}: source table named by run parameters only; "
                                     "its query is not analyzed")
            return
        source_ref = f"{project}.{dataset}.{table}"
        known = bool(_BILLING_EXPORT_TABLE.match(table))
        if known:
            self.catalog.add_billing_export(source_ref)
        else:
            self.report.notes.append(f"{display}: steps.{index}: no schema known for source table {source_ref}; "
                                     "its query's syntax is checked, not its names")
        margin = _resolved(source.get("partition_margin_days", 2), names)
        # As bq_etl._partition_filter renders it for an ingestion-time partitioned source (the billing export).
        days = int(margin) if isinstance(margin, int) or str(margin).isdigit() else 2
        partition_filter = ("TRUE" if margin is None else
                            f"_PARTITIONTIME >= TIMESTAMP(DATE_SUB(@start_date, INTERVAL {days} DAY))")
        parameters = {"start_date": "DATE", "end_date": "DATE", "org_slug": "STRING"}
        parameters.update(_parameter_types(source.get("parameters"), names))
        self._render(text, {"source_table": source_ref, "source_project": project, "source_dataset": dataset,
                            "partition_filter": partition_filter}, parameters, parse_only=not known)

    def _procedure_call(self, step: StepConfig, names: Mapping[str, Any]) -> None:
        name = step.config.get("procedure")
        arguments = step.config.get("arguments") or []
        if not isinstance(name, str) or name in self.procedure_args or not isinstance(arguments, list):
            return
        values = {}
        for argument in arguments:
            if isinstance(argument, Mapping) and isinstance(argument.get("name"), str):
                value = _resolved(argument.get("value"), names)
                if value is not None:
                    values[argument["name"]] = str(value)
        self.procedure_args[name] = values

    # ---- stored procedures ----

    def procedures(self) -> None:
        from convergence.processors.sql.procedures import procedure_files

        try:
            files = procedure_files(self.configs_dir)
        except StepError as error:
            self.report.problems.append(ConfigProblem(str(error), file="configs/system/procedures"))
            return
        for item in files:
            display = _display(item.path, self.configs_dir)
            try:
                sql = item.render(self.names.project_id, self.names.central_dataset)
            except StepError as error:
                self.report.problems.append(ConfigProblem(str(error), file=display, line=1))
                continue
            script = _Sql(sql, {}, display, 1)
            self.statements.append(script)
            self.scripts.append(script)
            arguments = _procedure_parameters(sql)
            values = {**{n: _representative(n, t, self.names) for n, t in arguments.items()},
                      **self.procedure_args.get(item.name, {})}
            for dynamic in _dynamic_statements(sql):
                rendered, reason = _format(dynamic, values)
                if rendered is not None:
                    self.statements.append(_Sql(rendered, {}, display, dynamic.line))
                else:
                    self.report.notes.append(f"{display}:{dynamic.line}: EXECUTE IMMEDIATE not analyzed: {reason}")


@functools.lru_cache(maxsize=64)
def _composed(path: Path, mtime_ns: int) -> yaml.Node | None:
    try:
        return yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return None


def _yaml_value_line(path: Path, keys: tuple[Any, ...]) -> tuple[int, bool]:
    """The file line of the value's first line of text, and whether its lines are the text's lines (a
    literal block `|` keeps them; folded and flow scalars do not)."""
    node = _composed(path, path.stat().st_mtime_ns if path.exists() else 0)
    if node is None:
        return 1, False
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            node = None
        if node is None:
            return 1, False
    if isinstance(node, yaml.ScalarNode) and node.style == "|":
        return node.start_mark.line + 2, True
    return node.start_mark.line + 1, False


# ---- procedure scripts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dynamic:
    template: str  # the string literal's value
    arguments: list[str]  # FORMAT's further arguments, as written
    line: int  # file line of the literal's first character
    formatted: bool


@dataclass(frozen=True)
class _Literal:
    end: int  # position after the closing quote
    body_start: int  # position of the value's first character
    value: str


def _literal_at(text: str, start: int) -> _Literal | None:
    """The string literal (optionally r/R/b/B-prefixed) that starts at `start`, or None."""
    index = start
    while index < len(text) and index - start < 2 and text[index] in "rRbB":
        index += 1
    if index >= len(text) or text[index] not in "'\"":
        return None
    if index > start and start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        return None  # the tail of an identifier, not a prefix
    raw = any(c in "rR" for c in text[start:index])
    quote = text[index] * 3 if text.startswith(text[index] * 3, index) else text[index]
    body_start = position = index + len(quote)
    while position < len(text):
        if text[position] == "\\" and not raw:
            position += 2
            continue
        if text.startswith(quote, position):
            body = text[body_start:position]
            if not raw:
                body = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)
            return _Literal(position + len(quote), body_start, body)
        position += 1
    return None


def _code_positions(text: str) -> Iterator[int]:
    """Positions of `text` outside comments and string literals."""
    index = 0
    while index < len(text):
        if text.startswith("--", index) or text[index] == "#":
            index = text.find("\n", index)
            if index < 0:
                return
            continue
        if text.startswith("/*", index):
            end = text.find("*/", index + 2)
            if end < 0:
                return
            index = end + 2
            continue
        literal = _literal_at(text, index)
        if literal is not None:
            index = literal.end
            continue
        yield index
        index += 1


def _split_arguments(text: str, start: int) -> list[str] | None:
    """The comma-separated arguments from `start` up to the closing parenthesis."""
    depth, current, out, index = 0, [], [], start
    while index < len(text):
        literal = _literal_at(text, index)
        if literal is not None:
            current.append(text[index:literal.end])
            index = literal.end
            continue
        char = text[index]
        if char == ")" and depth == 0:
            out.append("".join(current).strip())
            return [a for a in out if a]
        if char == "," and depth == 0:
            out.append("".join(current).strip())
            current = []
        else:
            depth += {"(": 1, ")": -1}.get(char, 0)
            current.append(char)
        index += 1
    return None


_EXECUTE = re.compile(r"EXECUTE\s+IMMEDIATE\s+(FORMAT\s*\(\s*)?", re.IGNORECASE)


def _dynamic_statements(sql: str) -> Iterator[_Dynamic]:
    """Each `EXECUTE IMMEDIATE <literal>` and `EXECUTE IMMEDIATE FORMAT(<literal>, args...)` of a script."""
    for index in _code_positions(sql):
        match = _EXECUTE.match(sql, index) if sql[index] in "eE" else None
        literal = _literal_at(sql, match.end()) if match else None
        if match is None or literal is None:
            continue
        arguments: list[str] = []
        if match.group(1):
            rest = re.compile(r"\s*,").match(sql, literal.end)
            arguments = (_split_arguments(sql, rest.end()) or []) if rest else []
        yield _Dynamic(literal.value, arguments, sql[:literal.body_start].count("\n") + 1, bool(match.group(1)))


def _procedure_parameters(sql: str) -> dict[str, str]:
    """The procedure's declared arguments: name -> type (as written)."""
    header = _PROC_HEADER.match(sql)
    if header is None:
        return {}
    out = {}
    for argument in _split_arguments(sql, header.end()) or []:
        words = argument.split()
        if words and words[0].upper() in ("IN", "OUT", "INOUT"):
            words = words[1:]
        if len(words) >= 2:
            out[words[0]] = words[1].upper()
    return out


def _representative(name: str, kind: str, names: SqlNames) -> str:
    """An argument's value for a procedure no config calls: by type, and for names by what they name."""
    if kind == "DATE":
        return names.start_date
    if kind in ("INT64", "INTEGER", "NUMERIC", "FLOAT64", "BIGNUMERIC"):
        return "1"
    lowered = name.lower()
    if "project" in lowered:
        return names.project_id
    if "dataset" in lowered:
        return names.org_dataset
    return names.org_slug


def _format(dynamic: _Dynamic, values: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(the dynamic statement as FORMAT renders it, None), or (None, why it cannot be rendered)."""
    if not dynamic.formatted:
        return dynamic.template, None
    rendered_args = []
    for argument in dynamic.arguments:
        cast = re.fullmatch(r"CAST\s*\(\s*([A-Za-z_]\w*)\s+AS\s+STRING\s*\)", argument, re.IGNORECASE)
        literal = _literal_at(argument, 0)
        if literal is not None and literal.end == len(argument):
            rendered_args.append(literal.value)
        elif (cast.group(1) if cast else argument) in values:
            rendered_args.append(values[cast.group(1) if cast else argument])
        else:
            return None, f"FORMAT argument {argument!r} is not a procedure argument"
    out, used, position = [], 0, 0
    for spec in _FORMAT_SPEC.finditer(dynamic.template):
        out.append(dynamic.template[position:spec.start()])
        position = spec.end()
        if spec.group(2) == "%":
            out.append("%")
            continue
        if spec.group(2) not in "sdit" or used >= len(rendered_args):
            return None, f"FORMAT specifier {spec.group(0)!r} is not rendered by the check"
        out.append(rendered_args[used])
        used += 1
    out.append(dynamic.template[position:])
    return "".join(out), None


# ---- the statements of a procedure's body --------------------------------------------------------------

# Statements analyzed inside a procedure: procedure arguments and typed DECLAREd variables are declared as
# query parameters of the same type (they are typed values in the statement, as parameters are). One
# difference: a STRING parameter coerces to DATE/TIMESTAMP where a STRING variable does not, so that one
# mistake passes here.
_BODY_STATEMENTS = frozenset({"ASTQueryStatement", "ASTInsertStatement", "ASTUpdateStatement",
                              "ASTDeleteStatement", "ASTMergeStatement"})
_PARAMETER_TYPES = frozenset({"STRING", "INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC", "BOOL", "DATE", "DATETIME",
                              "TIMESTAMP", "TIME", "BYTES", "JSON", "INTERVAL", "GEOGRAPHY"})


def _nodes(node: Any) -> Iterator[Any]:
    """Every syntax-tree node under `node` (itself included), depth first."""
    if not type(node).__name__.startswith("AST"):
        return
    yield node
    for name in getattr(node, "__dataclass_fields__", ()):
        value = getattr(node, name)
        for child in value if isinstance(value, list) else [value]:
            if hasattr(child, "__dataclass_fields__"):
                yield from _nodes(child)


class _Source:
    """The script's text addressed by the parser's byte offsets."""

    def __init__(self, sql: str):
        self.data = sql.encode("utf-8")

    def text(self, node: Any) -> str:
        span = node.parse_location_range
        return self.data[span.start:span.end].decode("utf-8")

    def line(self, node: Any) -> int:
        return self.data[:node.parse_location_range.start].count(b"\n") + 1


def _name(source: _Source, node: Any) -> str:
    return source.text(node).strip("`").lower()


def body_statements(tree: Any, script: _Sql) -> tuple[list[_Sql], list[str]]:
    """The statements of a parsed procedure script, each with its variables as typed parameters, and
    notes on the ones that cannot be analyzed alone."""
    source = _Source(script.sql)
    variables: dict[str, str | None] = {}
    temp_tables: set[str] = set()
    for node in _nodes(tree):
        kind = type(node).__name__
        if kind == "ASTFunctionParameter":
            children = [c for c in _nodes(node) if c is not node]
            names = [c for c in children if type(c).__name__ == "ASTIdentifier"]
            types = [c for c in children if type(c).__name__ == "ASTSimpleType"]
            if names and types:
                variables[_name(source, names[0])] = source.text(types[0]).upper()
        elif kind == "ASTVariableDeclaration":
            children = [c for c in _nodes(node) if c is not node]
            types = [c for c in children if type(c).__name__ == "ASTSimpleType"]
            kind_text = source.text(types[0]).upper() if types else None
            for identifier_list in (c for c in children if type(c).__name__ == "ASTIdentifierList"):
                for ident in (c for c in _nodes(identifier_list) if type(c).__name__ == "ASTIdentifier"):
                    variables[_name(source, ident)] = kind_text
        elif kind == "ASTCreateTableStatement":
            path = next((c for c in _nodes(node) if type(c).__name__ == "ASTPathExpression"), None)
            if path is not None:
                temp_tables.add(_name(source, path))
    statements, notes = [], []
    for node in _nodes(tree):
        if type(node).__name__ not in _BODY_STATEMENTS:
            continue
        start = node.parse_location_range.start
        text, line = source.text(node), source.line(node)
        where = f"{script.file}:{script.first_line + line - 1}"
        replacements: list[tuple[int, int, str]] = []
        parameters: dict[str, dict[str, str]] = {}
        skip = "it reads a system variable (@@)" if "@@" in text else None
        for path in (c for c in _nodes(node) if type(c).__name__ == "ASTPathExpression"):
            first = next((c for c in _nodes(path) if type(c).__name__ == "ASTIdentifier"), None)
            name = _name(source, first) if first is not None else ""
            if name in temp_tables:
                skip = skip or f"it reads the script's table {name}"
            if (first is None or name not in variables
                    or any(r[0] == first.parse_location_range.start - start for r in replacements)):
                continue
            declared = variables[name]
            if declared is None or declared not in _PARAMETER_TYPES:
                skip = skip or f"variable {name} has no simple declared type"
                continue
            parameters[name] = {"type": declared}
            span = first.parse_location_range
            replacements.append((span.start - start, span.end - start, f"@{name}"))
        if skip:
            notes.append(f"{where}: statement not analyzed: {skip}")
            continue
        data = text.encode("utf-8")
        for begin, end, value in sorted(replacements, reverse=True):
            data = data[:begin] + value.encode() + data[end:]
        statements.append(_Sql(data.decode("utf-8"), parameters, script.file, script.first_line + line - 1))
    return statements, notes


def _check_destination(analyzer: Any, item: _Sql, tables: Mapping[str, Any], report: SqlCheckReport) -> int:
    """The columns a transformer's SELECT produces against its destination, and the INSERT of them (types).
    Returns the number of statements analyzed."""
    from convergence.warehouse.googlesql import Statement

    destination = item.destination
    assert destination is not None
    try:
        produced = analyzer.output_columns(Statement(item.sql, item.parameters), tables)
    except Exception:  # noqa: BLE001 - accepted by check() a moment ago; nothing more to learn
        return 0
    problems = destination.problems(produced)
    for message in problems:
        report.problems.append(ConfigProblem(message, destination.path, destination.file, destination.line))
    if problems:
        return 0
    refusal = analyzer.check(Statement(destination.insert(item.sql, produced), item.parameters), tables)
    if refusal is not None:
        # The INSERT's line n + 2 is the SELECT's line n; its first two lines are the wrapper's own.
        found = _LOCATION.search(refusal.message)
        if found and int(found.group(1)) > 2:
            message = _LOCATION.sub(f" [at {int(found.group(1)) - 2}:{found.group(2)}]", refusal.message)
        else:
            message = _LOCATION.sub("", refusal.message)
        problem = item.problem(message)
        report.problems.append(ConfigProblem(f"writing to {destination.table_id.rsplit('.', 1)[-1]}: "
                                             f"{problem.message}", file=problem.file, line=problem.line))
    return 1


# ---- the check ---------------------------------------------------------------------------------------------


def check_sql(configs_dir: Path, names: SqlNames | None = None) -> SqlCheckReport:
    """Analyze every statement the configs carry. The analyzer is loaded only if there is SQL to check."""
    names = names or SqlNames()
    configs_dir = Path(configs_dir).resolve()
    report = SqlCheckReport()
    catalog = _Catalog(configs_dir, names, report)
    collector = _Collector(configs_dir, names, report, catalog)
    loader = PipelineLoader(configs_dir)
    for path in pipeline_files(configs_dir):
        try:
            config = loader.load_file(path)
        except ConfigError:
            continue  # reported by validate_tree
        collector.pipeline(path, config)
    collector.procedures()
    if not collector.statements:
        return report
    clock = time.perf_counter()
    from convergence.warehouse.googlesql import GoogleSql, Statement, index_tables

    try:
        analyzer = GoogleSql.shared()
    except RuntimeError as error:  # not installed (the production image)
        report.skipped = str(error)
        return report
    except Exception as error:  # noqa: BLE001 - installed but broken: said in one line, as a skip
        report.skipped = f"Google's SQL analyzer did not start: {type(error).__name__}: {str(error)[:200]}"
        return report
    step_tables, catalog.tables = catalog.tables, []
    catalog.add_schema_dirs()
    tables = index_tables([*catalog.tables, *step_tables])  # a step's own pairing wins over the file name
    seen: set[tuple[str, str, str]] = set()

    def analyze(item: _Sql) -> bool:
        key = (item.file, item.sql, repr(sorted(item.parameters.items())))
        if key in seen:
            return True
        seen.add(key)
        report.statements += 1
        if item.parse_only:
            try:
                analyzer.parse_script(item.sql)
            except Exception as error:  # noqa: BLE001 - every refusal is reported, whatever its class
                report.problems.append(item.problem(str(error)))
                return False
            return True
        refusal = analyzer.check(Statement(item.sql, item.parameters), tables)
        if refusal is not None:
            report.problems.append(item.problem(refusal.message))
        return refusal is None

    accepted = {id(item) for item in collector.statements if analyze(item)}
    for item in collector.statements:
        if item.destination is not None and id(item) in accepted:
            report.statements += _check_destination(analyzer, item, tables, report)
    for script in collector.scripts:
        if id(script) in accepted:
            statements, notes = body_statements(analyzer.parse_script(script.sql), script)
            report.notes.extend(notes)
            for item in statements:
                analyze(item)
    report.seconds = time.perf_counter() - clock
    return report
