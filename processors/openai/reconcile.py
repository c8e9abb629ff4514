"""ps_type `openai.reconcile`: `openai_cost_daily` (calculated) against `openai_billed_cost_daily_raw`
(the Costs API) per day, model snapshot and line-item direction (input / cached input / output), into
`openai_cost_reconciliation_daily`; differences reported in the step result. Cache writes count as
input. Billed items that are not per-token (line items that do not parse) appear as token type `other`.
The Costs API must be extracted with `group_by: [line_item, ...]` for a per-direction comparison.
See processors/_llm/reconcile.py for the config keys.
"""

from convergence.processors._llm.reconcile import Reconciliation

_RANGE = "org_slug = @org_slug AND cost_date BETWEEN @start_date AND @end_date"
# Cache writes are billed as input; line items that are not per-token are token type "other".
_CALCULATED = """SELECT cost_date, IFNULL(model, '(none)') AS model, 'input' AS token_type,
  IFNULL(input_cost, 0) + IFNULL(cache_write_cost, 0) AS cost FROM {table} WHERE {where}
UNION ALL SELECT cost_date, IFNULL(model, '(none)'), 'cached input', IFNULL(cached_input_cost, 0)
  FROM {table} WHERE {where}
UNION ALL SELECT cost_date, IFNULL(model, '(none)'), 'output', IFNULL(output_cost, 0) FROM {table} WHERE {where}"""
_BILLED = """SELECT cost_date, IFNULL(model, '(none)') AS model, IFNULL(token_type, 'total') AS token_type,
  amount_usd AS cost FROM {table} WHERE {where}"""


class OpenAIReconcile(Reconciliation):
    calculated_default = ("openai_cost_daily", "configs/openai/cost/schemas/openai_cost_daily.json")
    billed_default = ("openai_billed_cost_daily_raw", "configs/openai/cost/schemas/openai_billed_cost_daily_raw.json")
    target_default = ("openai_cost_reconciliation_daily",
                      "configs/openai/cost/schemas/openai_cost_reconciliation_daily.json")

    def calculated_lines(self, cost_table: str) -> str:
        return _CALCULATED.format(table=cost_table, where=_RANGE)

    def billed_lines(self, billed_table: str) -> str:
        return _BILLED.format(table=billed_table, where=_RANGE)

def get_engine() -> OpenAIReconcile:
    return OpenAIReconcile()
