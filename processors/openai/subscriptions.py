"""ps_type `openai.subscriptions`: the month's subscription cost per plan, from the org's
`openai_subscriptions` table (seeded from configs/openai/seed/data/default_subscriptions.csv) into
`openai_subscriptions_monthly`, computed in BigQuery (one MERGE job, idempotent per org and month).

A plan counts in a month when `effective_date <= last day` and (`end_date` is null or `>= first day`);
monthly cost = quantity x unit price (annual prices / 12).

Config: month (YYYY-MM; default: the `month` parameter, else the month of start_date, else the current
month UTC), source {table, schema_file}, destination {table, schema_file, partitioning, clustering}.
"""

from __future__ import annotations

from convergence.pipeline.context import RunContext
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.processors._llm.bq import Warehouse
from convergence.processors._llm.calc import TableSpec, run_replace
from convergence.processors._llm.params import month_range
from convergence.processors._llm.values import usd_text

_SELECT = """
SELECT @org_slug AS org_slug, @start_date AS month, plan_name, plan_type, quantity, unit_price_usd, billing_period,
  CASE WHEN billing_period = 'annual' THEN quantity * unit_price_usd / 12 ELSE quantity * unit_price_usd END
    AS monthly_cost_usd,
  IFNULL(currency, 'USD') AS currency, @run_id AS run_id, @now AS calculated_at
FROM {source}
WHERE org_slug = @org_slug AND effective_date <= @end_date AND (end_date IS NULL OR end_date >= @start_date)
"""

_TOTALS = """SELECT COUNT(*) AS plans, SUM(quantity) AS units, SUM(monthly_cost_usd) AS cost
FROM {target} WHERE org_slug = @org_slug AND month = @month"""


class OpenAISubscriptions:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        month = month_range(config, context.parameters)
        warehouse = Warehouse(context.services, context.org_slug)
        source = TableSpec(config.get("source"), "openai_subscriptions",
                           "configs/openai/seed/schemas/openai_subscriptions.json")
        target = TableSpec(config.get("destination"), "openai_subscriptions_monthly",
                           "configs/openai/schemas/openai_subscriptions_monthly.json", "month", ["plan_name"])
        for spec in (source, target):
            await spec.ensure(warehouse)
        job = await run_replace(warehouse, target, _SELECT.format(source=warehouse.ref(source.table)), "month",
                                month, context)
        rows, _ = await warehouse.query(_TOTALS.format(target=warehouse.ref(target.table)),
                                        {"org_slug": context.org_slug, "month": month.start})
        plans, units, cost = (rows[0]["plans"], rows[0]["units"], rows[0]["cost"]) if rows else (0, 0, 0)
        return {"status": "SUCCESS", "rows_processed": int(plans or 0), "month": f"{month.start:%Y-%m}",
                "table": target.table, "plans": int(plans or 0), "units": int(units or 0),
                "monthly_cost_usd": usd_text(cost or 0), "query_job_id": getattr(job, "job_id", None)}


def get_engine() -> OpenAISubscriptions:
    return OpenAISubscriptions()
