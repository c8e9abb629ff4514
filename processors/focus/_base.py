"""FOCUS sources: map one source's cost tables into `{org}_{env}.focus_cost_daily` inside BigQuery.

Each source (`focus.openai`, `focus.anthropic`, `focus.gcp`, `focus.saas`) declares the tables it reads
and one or more SELECT branches, each a `{FOCUS column: SQL expression}` mapping plus its FROM/WHERE
tail. The base turns them into ONE statement:

    MERGE focus_cost_daily T USING (<branches, every schema column in order>) S ON FALSE
    WHEN NOT MATCHED BY SOURCE AND T.x_OrgSlug = @org_slug AND T.x_SourcePipeline = @source
      AND T.x_ChargeDate BETWEEN @start_date AND @end_date THEN DELETE
    WHEN NOT MATCHED THEN INSERT (...) VALUES (...)

so a run atomically replaces exactly its own source's rows of its org and dates: re-runs leave one copy,
and a source never deletes another source's rows. Columns a branch does not map are typed NULLs.
Names are validated identifiers; every value is a query parameter (no NUMERIC parameters: the emulator
turns them into floats).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.pipeline.models import StepConfig
from convergence.pipeline.services import RunServices
from convergence.processors._llm.bq import Warehouse, identifier, resolve_file
from convergence.processors._llm.calc import TableSpec
from convergence.processors._llm.params import date_range, invalid
from convergence.processors._llm.values import usd_text

FOCUS_TABLE = "focus_cost_daily"
FOCUS_SCHEMA = "configs/focus/schemas/focus_cost_daily.json"
DATE_COLUMN = "x_ChargeDate"
CLUSTERING = ("x_SourcePipeline", "ServiceProviderName")

# Filled by the base for every row of every source.
_COMMON = {
    "x_OrgSlug": "@org_slug",
    "x_SourcePipeline": "@source",
    "x_RunId": "@run_id",
    "x_LoadedAt": "@now",
}

_SUMMARY = """SELECT ServiceProviderName AS provider, ServiceCategory AS category, x_CostBasis AS basis,
  ChargeCategory AS charge_category, COUNT(*) AS row_count, SUM(BilledCost) AS billed,
  SUM(EffectiveCost) AS effective, SUM(ListCost) AS list_cost, MAX(BillingCurrency) AS currency
FROM {target}
WHERE x_OrgSlug = @org_slug AND x_SourcePipeline = @source AND x_ChargeDate BETWEEN @start_date AND @end_date
GROUP BY provider, category, basis, charge_category"""


@dataclass(frozen=True)
class Branch:
    """One SELECT of a source: FOCUS column -> SQL expression, and the text after SELECT ... (FROM ...)."""

    columns: Mapping[str, str]
    tail: str


def focus_schema(services: RunServices, schema_file: str = FOCUS_SCHEMA) -> list[tuple[str, str]]:
    """(name, type) of every column of the FOCUS table, in schema order."""
    fields = json.loads(resolve_file(services, schema_file).read_text())
    return [(f["name"], str(f["type"]).upper()) for f in fields]


# Explicit precision: real BigQuery accepts NUMERIC(38, 9) (its full scale); the emulator (DuckDB) turns a
# bare NUMERIC cast into DECIMAL(18, 3) and would drop decimals.
NUMERIC = "NUMERIC(38, 9)"


def _sql_type(kind: str) -> str:
    return {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "NUMERIC": NUMERIC}.get(kind, kind)


def numeric(expression: str) -> str:
    return f"CAST({expression} AS {NUMERIC})"


def branch_sql(branch: Branch, schema: Sequence[tuple[str, str]]) -> str:
    known = {name for name, _ in schema}
    unknown = sorted(set(branch.columns) - known)
    if unknown:
        raise invalid(f"FOCUS mapping names columns the schema does not have: {unknown}")
    mapped = {**branch.columns, **_COMMON}
    select = ",\n  ".join(
        f"{mapped[name] if name in mapped else f'CAST(NULL AS {_sql_type(kind)})'} AS `{identifier(name, 'column')}`"
        for name, kind in schema)
    return f"SELECT\n  {select}\n{branch.tail}"


def merge_sql(target: str, ctes: str, branches: Sequence[Branch], schema: Sequence[tuple[str, str]]) -> str:
    columns = ", ".join(f"`{identifier(name, 'column')}`" for name, _ in schema)
    values = ", ".join(f"S.`{identifier(name, 'column')}`" for name, _ in schema)
    union = "\nUNION ALL\n".join(branch_sql(b, schema) for b in branches)
    source = f"{ctes}\n{union}" if ctes else union
    return (f"MERGE {target} T\nUSING (\n{source}\n) S\nON FALSE\n"  # noqa: S608 - validated names
            f"WHEN NOT MATCHED BY SOURCE AND T.x_OrgSlug = @org_slug AND T.x_SourcePipeline = @source\n"
            f"  AND T.{DATE_COLUMN} BETWEEN @start_date AND @end_date THEN DELETE\n"
            f"WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})")


def sql_text(value: Any) -> str:
    """A short fixed label as a SQL string literal (only for names we control: letters, digits, spaces)."""
    text = str(value)
    if not all(ch.isalnum() or ch in " _-.()" for ch in text) or len(text) > 100:
        raise invalid(f"label {text!r} may only contain letters, digits, spaces and _-.()")
    return f"'{text}'"


def names_config(config: Mapping[str, Any], key: str) -> dict[str, str]:
    """The step config's `key`: {id: display name}, both non-empty strings."""
    names = config.get(key) or {}
    if not isinstance(names, Mapping):
        raise invalid(f"{key} must be a mapping {{id: name}}")
    out: dict[str, str] = {}
    for ident, name in names.items():
        if not isinstance(name, str | int) or not str(name).strip() or not str(ident).strip():
            raise invalid(f"{key}.{ident} must be a non-empty name")
        out[str(ident)] = str(name)
    return out


def billing_account(config: Mapping[str, Any], default_id: str) -> tuple[str, str]:
    """(BillingAccountId, BillingAccountName) of a source whose rows carry no account: the step config's
    `billing_account_id` (default: the org slug); its name from `billing_account_names` {id: name} (one
    config for every org, so keyed by the id), else `billing_account_name`, else the id itself."""
    account = str(config.get("billing_account_id") or default_id)
    name = names_config(config, "billing_account_names").get(account) or config.get("billing_account_name")
    if name is not None and (not isinstance(name, str | int) or not str(name).strip()):
        raise invalid("billing_account_name must be a non-empty name")
    return account, str(name) if name is not None else account


def named(column: str, names: Mapping[str, str], prefix: str) -> tuple[str, dict[str, Any]]:
    """SQL giving the configured name of the id in `column`, else the id itself (NULL when the id is), and
    its query parameters (`@{prefix}_id_N`, `@{prefix}_name_N`)."""
    params: dict[str, Any] = {}
    whens = []
    for i, (ident, name) in enumerate(sorted(names.items())):
        params[f"{prefix}_id_{i}"], params[f"{prefix}_name_{i}"] = ident, name
        whens.append(f"WHEN @{prefix}_id_{i} THEN @{prefix}_name_{i}")
    if not whens:
        return column, params
    return f"CASE {column} {' '.join(whens)} ELSE {column} END", params


class FocusSource:
    """Base of the `focus.*` processors. Subclasses set `source` and `inputs`, and build branches."""

    source: str = ""
    # role -> (default table, schema file); the step config may override {table, schema_file} per role.
    inputs: Mapping[str, tuple[str, str]] = {}

    def ctes(self, refs: Mapping[str, str], config: Mapping[str, Any], context: RunContext) -> str:
        return ""

    def branches(self, refs: Mapping[str, str], config: Mapping[str, Any],
                 context: RunContext) -> list[Branch]:
        raise NotImplementedError

    def extra_params(self, config: Mapping[str, Any], context: RunContext) -> dict[str, Any]:
        return {}

    async def prepare(self, config: Mapping[str, Any], context: RunContext) -> tuple[Mapping[str, Any], dict[str, Any]]:
        """The step config to map with (e.g. with names read from the provider) and fields for the result."""
        return config, {}

    async def execute(self, step: StepConfig, context: RunContext) -> dict[str, Any]:
        config = context.resolve(step.config)
        dates = date_range(config, context.parameters)
        config, noted = await self.prepare(config, context)
        warehouse = Warehouse(context.services, context.org_slug)
        target = TableSpec(config.get("destination"), FOCUS_TABLE, FOCUS_SCHEMA, DATE_COLUMN, list(CLUSTERING))
        await target.ensure(warehouse)
        refs: dict[str, str] = {}
        for role, default in self.inputs.items():
            spec = TableSpec(config.get(role), *default)
            # A source the org never ran is an empty table: the run then clears this source's range.
            await spec.ensure(warehouse)
            refs[role] = warehouse.ref(spec.table)
        schema = focus_schema(context.services, target.schema_file)
        sql = merge_sql(warehouse.ref(target.table), self.ctes(refs, config, context),
                        self.branches(refs, config, context), schema)
        params = {"org_slug": context.org_slug, "source": self.source, "start_date": dates.start,
                  "end_date": dates.end, "run_id": context.run_id, "now": datetime.now(UTC),
                  **self.extra_params(config, context)}
        _, job = await warehouse.query(sql, params)
        summary_rows, _ = await warehouse.query(_SUMMARY.format(target=warehouse.ref(target.table)), params)
        return {"status": "SUCCESS", **summarize(summary_rows), **dates.as_result(), "source": self.source,
                "table": target.table, "query_job_id": getattr(job, "job_id", None), **noted}


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    billed = effective = Decimal(0)
    count = 0
    by_basis: dict[str, int] = {}
    currencies: set[str] = set()
    for row in rows:
        count += int(row["row_count"])
        billed += Decimal(str(row["billed"] or 0))
        effective += Decimal(str(row["effective"] or 0))
        by_basis[row["basis"]] = by_basis.get(row["basis"], 0) + int(row["row_count"])
        if row["currency"]:
            currencies.add(row["currency"])
    return {"rows_processed": count, "billed_cost": usd_text(billed), "effective_cost": usd_text(effective),
            "rows_by_basis": ",".join(f"{k}={v}" for k, v in sorted(by_basis.items())),
            "currencies": ",".join(sorted(currencies))}
