"""Reconciliation: calculated cost (usage x pricing) against the provider's billed cost, per day, model and
token type (OpenAI line item direction / Anthropic token_type), computed in BigQuery.

One MERGE job replaces the org's reconciliation rows for the date range; two small queries read back the
totals and the largest differences, which go into the step result (and so into the events: the scalar
fields `differences`, `difference_total_usd`, `difference_summary`...). A difference is reported, not a
failure, unless `fail_on_difference: true`.

Config: start_date/end_date, max_range_days, tolerance_usd (default 0.01: below it a line is a MATCH),
report_limit (default 20), fail_on_difference, calculated/billed/destination {table, schema_file}.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, PermanentStepError, invalid
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.processors._llm.bq import Warehouse
from convergence.processors._llm.calc import TableSpec, run_replace
from convergence.processors._llm.params import date_range, int_setting
from convergence.processors._llm.values import usd_text

SUMMARY_CHARS = 200

_SELECT = """
WITH calculated AS (
  SELECT cost_date, model, token_type, SUM(calc_lines.cost) AS cost
  FROM ({calculated}) AS calc_lines
  GROUP BY cost_date, model, token_type
  -- Qualified: in HAVING a bare `cost` is the SELECT alias, an aggregate of an aggregate in GoogleSQL.
  HAVING SUM(calc_lines.cost) != 0
),
billed AS (
  SELECT cost_date, model, token_type, SUM(cost) AS cost
  FROM ({billed}) AS billed_lines
  GROUP BY cost_date, model, token_type
)
SELECT @org_slug AS org_slug,
  COALESCE(c.cost_date, b.cost_date) AS cost_date,
  COALESCE(c.model, b.model) AS model,
  COALESCE(c.token_type, b.token_type) AS token_type,
  IFNULL(c.cost, 0) AS calculated_cost,
  IFNULL(b.cost, 0) AS billed_cost,
  IFNULL(b.cost, 0) - IFNULL(c.cost, 0) AS difference,
  CASE
    WHEN ABS(IFNULL(b.cost, 0) - IFNULL(c.cost, 0)) * 1000000 < @tolerance_micros THEN 'MATCH'
    WHEN b.cost IS NULL THEN 'CALCULATED_ONLY'
    WHEN c.cost IS NULL THEN 'BILLED_ONLY'
    ELSE 'DIFFERENCE'
  END AS status,
  @run_id AS run_id, @now AS reconciled_at
FROM calculated AS c
FULL OUTER JOIN billed AS b
  ON c.cost_date = b.cost_date AND c.model = b.model AND c.token_type = b.token_type
"""

_TOTALS = """SELECT COUNT(*) AS line_count, COUNTIF(status != 'MATCH') AS difference_count,
  COUNT(DISTINCT cost_date) AS days, SUM(calculated_cost) AS calculated, SUM(billed_cost) AS billed
FROM {target}
WHERE org_slug = @org_slug AND cost_date BETWEEN @start_date AND @end_date"""

_TOP = """SELECT cost_date, model, token_type, calculated_cost, billed_cost, difference, status
FROM {target}
WHERE org_slug = @org_slug AND cost_date BETWEEN @start_date AND @end_date AND status != 'MATCH'
ORDER BY ABS(difference) DESC, cost_date, model, token_type
LIMIT @limit"""


class Reconciliation:
    calculated_default: tuple[str, str] = ("", "")
    billed_default: tuple[str, str] = ("", "")
    target_default: tuple[str, str] = ("", "")

    def calculated_lines(self, cost_table: str) -> str:
        """SELECT cost_date, model, token_type, cost: the calculated cost split by billed token type."""
        raise NotImplementedError

    def billed_lines(self, billed_table: str) -> str:
        """SELECT cost_date, model, token_type, cost: the billed cost on the same keys."""
        raise NotImplementedError

    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        dates = date_range(config, context.parameters)
        try:
            tolerance = Decimal(str(config.get("tolerance_usd", "0.01")))
        except InvalidOperation:
            raise invalid(f"tolerance_usd {config.get('tolerance_usd')!r} is not a decimal number",
                          ErrorCode.INVALID_PARAMETERS) from None
        if tolerance < 0:
            raise invalid("tolerance_usd must not be negative", ErrorCode.INVALID_PARAMETERS)
        limit = int_setting(config, "report_limit", 20, 0, 1000)
        warehouse = Warehouse(context.services, context.org_slug)
        calculated = TableSpec(config.get("calculated"), *self.calculated_default, "cost_date", ["model"])
        billed = TableSpec(config.get("billed"), *self.billed_default, "cost_date", ["model"])
        target = TableSpec(config.get("destination"), *self.target_default, "cost_date", ["model"])
        for spec in (calculated, billed, target):
            await spec.ensure(warehouse)
        select = _SELECT.format(calculated=self.calculated_lines(warehouse.ref(calculated.table)),
                                billed=self.billed_lines(warehouse.ref(billed.table)))
        job = await run_replace(warehouse, target, select, "cost_date", dates, context,
                                {"tolerance_micros": int(tolerance * 1_000_000)})
        params = {"org_slug": context.org_slug, "start_date": dates.start, "end_date": dates.end}
        totals, _ = await warehouse.query(_TOTALS.format(target=warehouse.ref(target.table)), params)
        top, _ = await warehouse.query(_TOP.format(target=warehouse.ref(target.table)), {**params, "limit": limit})
        total = totals[0] if totals else None
        calc_total = Decimal(total["calculated"] or 0) if total else Decimal(0)
        billed_total = Decimal(total["billed"] or 0) if total else Decimal(0)
        count = int(total["difference_count"] or 0) if total else 0
        lines = [{
            "cost_date": r["cost_date"].isoformat(), "model": r["model"], "token_type": r["token_type"],
            "calculated_usd": usd_text(r["calculated_cost"]), "billed_usd": usd_text(r["billed_cost"]),
            "difference_usd": usd_text(r["difference"]), "status": r["status"],
        } for r in top]
        result = {
            "status": "SUCCESS",
            "rows_processed": int(total["line_count"] or 0) if total else 0,
            **dates.as_result(),
            "table": target.table,
            "days_compared": int(total["days"] or 0) if total else 0,
            "calculated_total_usd": usd_text(calc_total),
            "billed_total_usd": usd_text(billed_total),
            "difference_total_usd": usd_text(billed_total - calc_total),
            "differences": count,
            "max_abs_difference_usd": usd_text(abs(Decimal(top[0]["difference"]))) if top else "0.00",
            "difference_summary": _summary(lines),
            "tolerance_usd": str(tolerance),
            "query_job_id": getattr(job, "job_id", None),
            "difference_lines": lines,
        }
        if count and config.get("fail_on_difference"):
            raise PermanentStepError(f"{count} reconciliation differences above {tolerance} USD: "
                                     f"{result['difference_summary']}", code=ErrorCode.RECONCILIATION_DIFFERENCE)
        return result


def _summary(lines: list[dict[str, Any]]) -> str:
    parts = []
    for line in lines:
        sign = "+" if not str(line["difference_usd"]).startswith("-") else ""
        parts.append(f"{line['cost_date']} {line['model']} {line['token_type']}: calc {line['calculated_usd']} "
                     f"billed {line['billed_usd']} ({sign}{line['difference_usd']})")
    text = "; ".join(parts)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 3] + "..."
