"""Cost calculation pushed down to BigQuery: one MERGE job replaces the org's cost rows for the date
range with usage x pricing computed in SQL (NUMERIC, never floats), then one small query summarizes
the result (totals, unpriced usage). No Python loop over usage rows.

The MERGE idiom `ON FALSE ... WHEN NOT MATCHED BY SOURCE AND <org and range> THEN DELETE ... WHEN NOT
MATCHED THEN INSERT` is a single atomic statement: a redelivered run leaves exactly one copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog

from convergence.pipeline.context import RunContext
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.processors._llm.bq import Warehouse, identifier, schema_columns
from convergence.processors._llm.params import DateRange, date_range
from convergence.processors._llm.values import usd_text

log = structlog.get_logger(__name__)
UNPRICED_MODELS_SHOWN = 10


# SQL templates take only validated identifiers and fixed SQL; every value is a query parameter.
_MERGE = """MERGE {target} T
USING (
{select}
) S
ON FALSE
WHEN NOT MATCHED BY SOURCE AND T.org_slug = @org_slug AND T.{date_column} BETWEEN @start_date AND @end_date
  THEN DELETE
WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"""

_SUMMARY = """SELECT model, is_priced, COUNT(*) AS row_count, SUM(total_tokens) AS tokens, SUM(total_cost) AS cost,
  MAX(currency) AS currency
FROM {target}
WHERE org_slug = @org_slug AND cost_date BETWEEN @start_date AND @end_date
GROUP BY model, is_priced"""


def replace_range_sql(target: str, columns: Sequence[str], select_sql: str, date_column: str) -> str:
    return _MERGE.format(target=target, select=select_sql, date_column=identifier(date_column, "column"),
                         columns=", ".join(identifier(c, "column") for c in columns),
                         values=", ".join(f"S.{identifier(c, 'column')}" for c in columns))


class TableSpec:
    """A table named by a step config: `{table, schema_file, partitioning, clustering}` (warehouse layout:
    partitioning is a column name or {field, type, expiration_days}; clustering 1-4 columns)."""

    def __init__(self, config: Mapping[str, Any] | None, default_table: str, default_schema: str,
                 partitioning: Any = None, clustering: Sequence[str] = ()):
        config = config or {}
        self.table = identifier(config.get("table", default_table))
        self.schema_file = str(config.get("schema_file", default_schema))
        self.partitioning = config.get("partitioning", partitioning)
        self.clustering = list(config.get("clustering", clustering)) or None

    async def ensure(self, warehouse: Warehouse) -> None:
        await warehouse.ensure_table(self.table, self.schema_file, self.partitioning, self.clustering)


async def run_replace(warehouse: Warehouse, target: TableSpec, select_sql: str, date_column: str,
                      dates: DateRange, context: RunContext, extra_params: Mapping[str, Any] | None = None) -> Any:
    columns = schema_columns(warehouse.services, target.schema_file)
    sql = replace_range_sql(warehouse.ref(target.table), columns, select_sql, date_column)
    params = {"org_slug": context.org_slug, "start_date": dates.start, "end_date": dates.end,
              "run_id": context.run_id, "now": datetime.now(UTC), **(extra_params or {})}
    _, job = await warehouse.query(sql, params)
    return job


async def cost_summary(warehouse: Warehouse, target: TableSpec, dates: DateRange,
                       context: RunContext) -> dict[str, Any]:
    """Totals of what the cost step wrote, with unpriced usage (rows, tokens, models) called out."""
    rows, _ = await warehouse.query(_SUMMARY.format(target=warehouse.ref(target.table)),
                                    {"org_slug": context.org_slug, "start_date": dates.start, "end_date": dates.end})
    total = Decimal(0)
    priced_rows = unpriced_rows = unpriced_tokens = 0
    unpriced_models: list[str] = []
    by_model: dict[str, Decimal] = {}
    currency = None
    for row in rows:
        model = row["model"] if row["model"] is not None else "(not grouped)"
        if row["is_priced"]:
            priced_rows += row["row_count"]
            cost = Decimal(row["cost"] or 0)
            total += cost
            by_model[model] = by_model.get(model, Decimal(0)) + cost
            currency = currency or row["currency"]
        else:
            unpriced_rows += row["row_count"]
            unpriced_tokens += int(row["tokens"] or 0)
            unpriced_models.append(model)
    unpriced_models.sort()
    if unpriced_rows:
        log.warning("usage without a price", org_slug=context.org_slug, rows=unpriced_rows, tokens=unpriced_tokens,
                    models=unpriced_models[:UNPRICED_MODELS_SHOWN])
    return {
        "rows_processed": priced_rows + unpriced_rows,
        **dates.as_result(),
        "table": target.table,
        "total_cost_usd": usd_text(total),
        "currency": currency or "USD",
        "priced_rows": priced_rows,
        "unpriced_rows": unpriced_rows,
        "unpriced_tokens": unpriced_tokens,
        "unpriced_models": ",".join(unpriced_models[:UNPRICED_MODELS_SHOWN]),
        "models": len(by_model) + len(unpriced_models),
        "cost_by_model": [{"model": m, "cost_usd": usd_text(c)} for m, c in
                          sorted(by_model.items(), key=lambda kv: (-kv[1], kv[0]))[:20]],
    }


class CostCalculation:
    """Base of `openai.cost` / `anthropic.cost`: ensure tables, one MERGE job, one summary query."""

    source_default: tuple[str, str] = ("", "")
    pricing_default: tuple[str, str] = ("", "")
    target_default: tuple[str, str] = ("", "")
    cluster_fields: tuple[str, ...] = ("model",)

    def select_sql(self, raw: str, pricing: str) -> str:
        raise NotImplementedError

    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        dates = date_range(config, context.parameters)
        warehouse = Warehouse(context.services, context.org_slug)
        source = TableSpec(config.get("source"), *self.source_default, "usage_date", ["model"])
        pricing = TableSpec(config.get("pricing"), *self.pricing_default)
        target = TableSpec(config.get("destination"), *self.target_default, "cost_date", self.cluster_fields)
        for spec in (source, pricing, target):
            await spec.ensure(warehouse)
        job = await run_replace(warehouse, target, self.select_sql(warehouse.ref(source.table),
                                                                   warehouse.ref(pricing.table)),
                                "cost_date", dates, context)
        summary = await cost_summary(warehouse, target, dates, context)
        return {"status": "SUCCESS", **summary, "query_job_id": getattr(job, "job_id", None)}
