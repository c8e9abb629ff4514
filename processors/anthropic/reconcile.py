"""ps_type `anthropic.reconcile`: `anthropic_cost_daily` (calculated) against
`anthropic_billed_cost_daily_raw` (the cost report) per day, model snapshot and token_type
(uncached_input_tokens, cache_read_input_tokens, cache_creation.ephemeral_5m_input_tokens,
cache_creation.ephemeral_1h_input_tokens, output_tokens), plus web searches (model `(none)`, token type
`web_search`) and other non-token costs under their cost_type, into `anthropic_cost_reconciliation_daily`.
The cost report must be extracted with `group_by[]=description` for this split. Priority Tier usage is
not in the cost report and shows as CALCULATED_ONLY. See processors/_llm/reconcile.py for config.
"""

from convergence.processors._llm.reconcile import Reconciliation

_RANGE = "org_slug = @org_slug AND cost_date BETWEEN @start_date AND @end_date"
_CALCULATED = ("SELECT cost_date, IFNULL(model, '(none)') AS model, '{token}' AS token_type, "
               "IFNULL({column}, 0) AS cost FROM {table} WHERE {where}")
_SEARCHES = "SELECT cost_date, '(none)', 'web_search', IFNULL(web_search_cost, 0) FROM {table} WHERE {where}"
# Token lines keep model and token_type; other cost types (web_search, code_execution...) have no model;
# without group_by[]=description the whole day is one 'total' line.
_BILLED = """SELECT cost_date,
  CASE WHEN cost_type IS NULL OR cost_type = 'tokens' THEN IFNULL(model, '(none)') ELSE '(none)' END AS model,
  CASE WHEN cost_type IS NULL THEN 'total' WHEN cost_type = 'tokens' THEN IFNULL(token_type, 'tokens')
    ELSE cost_type END AS token_type,
  amount_usd AS cost
FROM {table} WHERE {where}"""
_TOKEN_COSTS = (
    ("uncached_input_tokens", "uncached_input_cost"),
    ("cache_read_input_tokens", "cache_read_cost"),
    ("cache_creation.ephemeral_5m_input_tokens", "cache_write_5m_cost"),
    ("cache_creation.ephemeral_1h_input_tokens", "cache_write_1h_cost"),
    ("output_tokens", "output_cost"),
)


class AnthropicReconcile(Reconciliation):
    calculated_default = ("anthropic_cost_daily", "configs/anthropic/schemas/anthropic_cost_daily.json")
    billed_default = ("anthropic_billed_cost_daily_raw",
                      "configs/anthropic/schemas/anthropic_billed_cost_daily_raw.json")
    target_default = ("anthropic_cost_reconciliation_daily",
                      "configs/anthropic/schemas/anthropic_cost_reconciliation_daily.json")

    def calculated_lines(self, cost_table: str) -> str:
        parts = [_CALCULATED.format(token=token, column=column, table=cost_table, where=_RANGE)
                 for token, column in _TOKEN_COSTS]
        parts.append(_SEARCHES.format(table=cost_table, where=_RANGE))
        return "\nUNION ALL ".join(parts)

    def billed_lines(self, billed_table: str) -> str:
        return _BILLED.format(table=billed_table, where=_RANGE)

def get_engine() -> AnthropicReconcile:
    return AnthropicReconcile()
