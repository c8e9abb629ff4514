"""ps_type `deepseek.balance_spend`: spend per day and currency derived from the balance snapshots, in
BigQuery, in one MERGE job that replaces the org's rows for the date range in `deepseek_balance_spend_daily`.

spend(D) = total balance at the snapshot of D + credits recorded for D - total balance at the snapshot of D+1.
The API reports no top-ups or grants, so the org records them in `deepseek_balance_credits`. A day whose
topped-up or granted balance rose with nothing recorded is CREDIT_UNRECORDED (a rise proves a credit;
its size is unknown, so the spend is null, never a guess). A day without the next snapshot is
NO_CLOSING_SNAPSHOT; a negative derived spend (credits under-recorded) is INCONSISTENT. Only DERIVED rows
carry a spend. Expiring granted credit is indistinguishable from spend here.

Config (all optional): start_date/end_date, lookback_days, max_range_days, snapshots/credits/destination
{table, schema_file}.
"""

from __future__ import annotations

from decimal import Decimal

from convergence.pipeline.context import RunContext
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.processors._llm.bq import Warehouse
from convergence.processors._llm.calc import TableSpec, run_replace
from convergence.processors._llm.params import date_range
from convergence.processors._llm.values import usd_text

_SELECT = """
WITH snaps AS (
  SELECT snapshot_date, currency, observed_at, total_balance, granted_balance, topped_up_balance
  FROM {snapshots}
  WHERE org_slug = @org_slug AND snapshot_date BETWEEN @start_date AND DATE_ADD(@end_date, INTERVAL 1 DAY)
),
credits AS (
  SELECT credit_date, currency, SUM(amount) AS amount
  FROM {credits}
  WHERE org_slug = @org_slug AND credit_date BETWEEN @start_date AND @end_date
  GROUP BY credit_date, currency
),
days AS (
  SELECT o.snapshot_date AS spend_date, o.currency,
    o.observed_at AS opening_observed_at, c.observed_at AS closing_observed_at,
    o.total_balance AS opening_total_balance, c.total_balance AS closing_total_balance,
    o.granted_balance AS opening_granted_balance, c.granted_balance AS closing_granted_balance,
    o.topped_up_balance AS opening_topped_up_balance, c.topped_up_balance AS closing_topped_up_balance,
    cr.amount AS credit_amount
  FROM snaps AS o
  LEFT JOIN snaps AS c ON c.currency = o.currency AND c.snapshot_date = DATE_ADD(o.snapshot_date, INTERVAL 1 DAY)
  LEFT JOIN credits AS cr ON cr.currency = o.currency AND cr.credit_date = o.snapshot_date
  WHERE o.snapshot_date BETWEEN @start_date AND @end_date
),
judged AS (
  SELECT *,
    opening_total_balance + IFNULL(credit_amount, 0) - closing_total_balance AS derived,
    CASE
      WHEN closing_observed_at IS NULL THEN 'NO_CLOSING_SNAPSHOT'
      WHEN credit_amount IS NULL AND (closing_topped_up_balance > opening_topped_up_balance
                                      OR closing_granted_balance > opening_granted_balance)
        THEN 'CREDIT_UNRECORDED'
      WHEN opening_total_balance + IFNULL(credit_amount, 0) - closing_total_balance < 0 THEN 'INCONSISTENT'
      ELSE 'DERIVED'
    END AS status
  FROM days
)
SELECT @org_slug AS org_slug, spend_date, currency, opening_observed_at, closing_observed_at,
  opening_total_balance, closing_total_balance, opening_granted_balance, closing_granted_balance,
  opening_topped_up_balance, closing_topped_up_balance, IFNULL(credit_amount, 0) AS credits_recorded,
  CASE WHEN status = 'DERIVED' THEN derived END AS spend, status, @run_id AS run_id, @now AS calculated_at
FROM judged
"""

_SUMMARY = """SELECT currency, status, COUNT(*) AS days, SUM(spend) AS spend
FROM {target}
WHERE org_slug = @org_slug AND spend_date BETWEEN @start_date AND @end_date
GROUP BY currency, status
ORDER BY currency, status"""


class DeepSeekBalanceSpend:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        dates = date_range(config, context.parameters)
        warehouse = Warehouse(context.services, context.org_slug)
        snapshots = TableSpec(config.get("snapshots"), "deepseek_balance_snapshots",
                              "configs/deepseek/schemas/deepseek_balance_snapshots.json", "snapshot_date",
                              ["currency"])
        credits = TableSpec(config.get("credits"), "deepseek_balance_credits",
                            "configs/deepseek/schemas/deepseek_balance_credits.json", "credit_date", ["currency"])
        target = TableSpec(config.get("destination"), "deepseek_balance_spend_daily",
                           "configs/deepseek/schemas/deepseek_balance_spend_daily.json", "spend_date", ["currency"])
        for spec in (snapshots, credits, target):
            await spec.ensure(warehouse)
        select = _SELECT.format(snapshots=warehouse.ref(snapshots.table), credits=warehouse.ref(credits.table))
        job = await run_replace(warehouse, target, select, "spend_date", dates, context)
        rows, _ = await warehouse.query(_SUMMARY.format(target=warehouse.ref(target.table)),
                                        {"org_slug": context.org_slug, "start_date": dates.start,
                                         "end_date": dates.end})
        by_status: dict[str, int] = {}
        spend: dict[str, Decimal] = {}
        for row in rows:
            by_status[row["status"]] = by_status.get(row["status"], 0) + row["days"]
            if row["status"] == "DERIVED":
                spend[row["currency"]] = spend.get(row["currency"], Decimal(0)) + Decimal(row["spend"] or 0)
        return {
            "status": "SUCCESS", "rows_processed": sum(by_status.values()), **dates.as_result(),
            "table": target.table, "derived_days": by_status.get("DERIVED", 0),
            "credit_unrecorded_days": by_status.get("CREDIT_UNRECORDED", 0),
            "no_closing_snapshot_days": by_status.get("NO_CLOSING_SNAPSHOT", 0),
            "inconsistent_days": by_status.get("INCONSISTENT", 0),
            "spend": [{"currency": c, "amount": usd_text(a)} for c, a in sorted(spend.items())],
            "query_job_id": getattr(job, "job_id", None),
        }


def get_engine() -> DeepSeekBalanceSpend:
    return DeepSeekBalanceSpend()
