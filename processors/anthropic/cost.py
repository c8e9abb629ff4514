"""ps_type `anthropic.cost`: daily cost per (date, workspace, model, service tier, context window) from
`anthropic_usage_daily_raw` x the org's `anthropic_model_pricing`, computed in BigQuery in one MERGE job
that replaces the org's rows for the date range in `anthropic_cost_daily`.

Token types at their own prices: uncached input, cache reads, 5-minute and 1-hour cache writes, output;
web searches per 1,000. Price rows are per (model_id, context_window) with effective dates (a row applies
until the next one for the same model and window); usage reported in the 200k-1M window takes the
long-context row; the batch tier is multiplied by `batch_multiplier`. An exact snapshot row wins over the
family row. Usage with no matching price gets `is_priced = false`, null costs, and is reported.

Config (all optional): start_date/end_date, max_range_days, source/pricing/destination {table, schema_file}.
"""

from __future__ import annotations

from convergence.processors._llm.calc import CostCalculation

_SELECT = """
WITH usage AS (
  SELECT usage_date AS cost_date, workspace_id, model, MAX(model_base) AS model_base, service_tier, context_window,
    SUM(uncached_input_tokens) AS uncached_input_tokens,
    SUM(cache_read_input_tokens) AS cache_read_input_tokens,
    SUM(cache_creation_5m_input_tokens) AS cache_creation_5m_input_tokens,
    SUM(cache_creation_1h_input_tokens) AS cache_creation_1h_input_tokens,
    SUM(output_tokens) AS output_tokens,
    SUM(web_search_requests) AS web_search_requests
  FROM {raw}
  WHERE org_slug = @org_slug AND usage_date BETWEEN @start_date AND @end_date
  GROUP BY usage_date, workspace_id, model, service_tier, context_window
),
prices AS (
  SELECT model_id, context_window AS price_window, effective_date,
    LEAD(effective_date) OVER (PARTITION BY model_id, context_window ORDER BY effective_date) AS next_effective_date,
    input_price_per_1m, cache_read_price_per_1m, cache_write_5m_price_per_1m, cache_write_1h_price_per_1m,
    output_price_per_1m, web_search_price_per_1k, IFNULL(batch_multiplier, 1) AS batch_multiplier, currency
  FROM {pricing}
  WHERE org_slug = @org_slug
),
matched AS (
  SELECT u.cost_date, u.workspace_id, u.model, u.model_base, u.service_tier, u.context_window,
    u.uncached_input_tokens, u.cache_read_input_tokens, u.cache_creation_5m_input_tokens,
    u.cache_creation_1h_input_tokens, u.output_tokens, u.web_search_requests,
    p.model_id AS pricing_model_id, p.effective_date AS pricing_effective_date,
    p.input_price_per_1m, p.cache_read_price_per_1m, p.cache_write_5m_price_per_1m, p.cache_write_1h_price_per_1m,
    p.output_price_per_1m, p.web_search_price_per_1k,
    CASE WHEN p.model_id IS NULL THEN NULL WHEN u.service_tier = 'batch' THEN p.batch_multiplier ELSE 1 END
      AS price_multiplier,
    p.currency,
    ROW_NUMBER() OVER (
      PARTITION BY u.cost_date, u.workspace_id, u.model, u.service_tier, u.context_window
      ORDER BY CASE WHEN p.model_id = u.model THEN 0 ELSE 1 END
    ) AS price_rank
  FROM usage AS u
  LEFT JOIN prices AS p
    ON (p.model_id = u.model OR p.model_id = u.model_base)
    AND p.price_window = IFNULL(u.context_window, '0-200k')
    AND u.cost_date >= p.effective_date
    AND (p.next_effective_date IS NULL OR u.cost_date < p.next_effective_date)
),
costed AS (
  SELECT *,
    uncached_input_tokens * input_price_per_1m * price_multiplier / 1000000 AS uncached_input_cost,
    cache_read_input_tokens * cache_read_price_per_1m * price_multiplier / 1000000 AS cache_read_cost,
    cache_creation_5m_input_tokens * cache_write_5m_price_per_1m * price_multiplier / 1000000 AS cache_write_5m_cost,
    cache_creation_1h_input_tokens * cache_write_1h_price_per_1m * price_multiplier / 1000000 AS cache_write_1h_cost,
    output_tokens * output_price_per_1m * price_multiplier / 1000000 AS output_cost,
    CASE WHEN pricing_model_id IS NULL THEN NULL WHEN web_search_requests = 0 THEN 0
      ELSE web_search_requests * web_search_price_per_1k / 1000 END AS web_search_cost
  FROM matched
  WHERE price_rank = 1
)
SELECT @org_slug AS org_slug, cost_date, workspace_id, model, model_base, service_tier, context_window,
  pricing_model_id IS NOT NULL AS is_priced, pricing_model_id, pricing_effective_date,
  uncached_input_tokens, cache_read_input_tokens, cache_creation_5m_input_tokens, cache_creation_1h_input_tokens,
  output_tokens,
  uncached_input_tokens + cache_read_input_tokens + cache_creation_5m_input_tokens + cache_creation_1h_input_tokens
    + output_tokens AS total_tokens,
  web_search_requests,
  input_price_per_1m, cache_read_price_per_1m, cache_write_5m_price_per_1m, cache_write_1h_price_per_1m,
  output_price_per_1m, web_search_price_per_1k, price_multiplier,
  uncached_input_cost, cache_read_cost, cache_write_5m_cost, cache_write_1h_cost, output_cost, web_search_cost,
  uncached_input_cost + cache_read_cost + cache_write_5m_cost + cache_write_1h_cost + output_cost + web_search_cost
    AS total_cost,
  IFNULL(currency, 'USD') AS currency, @run_id AS run_id, @now AS calculated_at
FROM costed
"""


class AnthropicCost(CostCalculation):
    source_default = ("anthropic_usage_daily_raw", "configs/anthropic/schemas/anthropic_usage_daily_raw.json")
    pricing_default = ("anthropic_model_pricing", "configs/anthropic/seed/schemas/anthropic_pricing.json")
    target_default = ("anthropic_cost_daily", "configs/anthropic/schemas/anthropic_cost_daily.json")

    def select_sql(self, raw: str, pricing: str) -> str:
        return _SELECT.format(raw=raw, pricing=pricing)


def get_engine() -> AnthropicCost:
    return AnthropicCost()
