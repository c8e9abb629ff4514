"""ps_type `deepseek.cost`: daily cost per (date, api key label, model, time band) from the token counts
the org supplies in `deepseek_usage_daily_raw` (sums of the chat completions' `usage` objects: DeepSeek
serves no usage history) x the org's `deepseek_model_pricing`, computed in BigQuery in one MERGE job that
replaces the org's rows for the date range in `deepseek_cost_daily`.

Token types at their own prices: input that hit the context cache, input that missed it, output
(reasoning tokens are part of completion_tokens and priced as output). Price rows are per (model_id,
time_band) with effective dates (a row applies until the next one for the same model and band); a null
time band is `standard`; `off_peak` is the UTC 16:30-00:30 band DeepSeek discounted until 2025-09-05.
Usage with no matching price gets `is_priced = false`, null costs, and is reported.

Config (all optional): start_date/end_date, lookback_days, max_range_days, source/pricing/destination
{table, schema_file}.
"""

from __future__ import annotations

from convergence.processors._llm.calc import CostCalculation

_SELECT = """
WITH usage AS (
  SELECT usage_date AS cost_date, api_key_name, model, IFNULL(time_band, 'standard') AS time_band,
    SUM(requests) AS requests,
    SUM(prompt_cache_hit_tokens) AS cache_hit_input_tokens,
    SUM(prompt_cache_miss_tokens) AS cache_miss_input_tokens,
    SUM(completion_tokens) AS output_tokens,
    SUM(reasoning_tokens) AS reasoning_tokens
  FROM {raw}
  WHERE org_slug = @org_slug AND usage_date BETWEEN @start_date AND @end_date
  GROUP BY usage_date, api_key_name, model, IFNULL(time_band, 'standard')
),
prices AS (
  SELECT model_id, time_band AS price_band, effective_date,
    LEAD(effective_date) OVER (PARTITION BY model_id, time_band ORDER BY effective_date) AS next_effective_date,
    cache_hit_input_price_per_1m, cache_miss_input_price_per_1m, output_price_per_1m, currency
  FROM {pricing}
  WHERE org_slug = @org_slug
),
matched AS (
  SELECT u.*, p.model_id AS pricing_model_id, p.effective_date AS pricing_effective_date,
    p.cache_hit_input_price_per_1m, p.cache_miss_input_price_per_1m, p.output_price_per_1m, p.currency
  FROM usage AS u
  LEFT JOIN prices AS p
    ON p.model_id = u.model AND p.price_band = u.time_band
    AND u.cost_date >= p.effective_date
    AND (p.next_effective_date IS NULL OR u.cost_date < p.next_effective_date)
),
costed AS (
  SELECT *,
    cache_hit_input_tokens * cache_hit_input_price_per_1m / 1000000 AS cache_hit_input_cost,
    cache_miss_input_tokens * cache_miss_input_price_per_1m / 1000000 AS cache_miss_input_cost,
    output_tokens * output_price_per_1m / 1000000 AS output_cost
  FROM matched
)
SELECT @org_slug AS org_slug, cost_date, api_key_name, model, time_band,
  pricing_model_id IS NOT NULL AS is_priced, pricing_model_id, pricing_effective_date, requests,
  cache_hit_input_tokens, cache_miss_input_tokens, output_tokens, reasoning_tokens,
  cache_hit_input_tokens + cache_miss_input_tokens + output_tokens AS total_tokens,
  cache_hit_input_price_per_1m, cache_miss_input_price_per_1m, output_price_per_1m,
  cache_hit_input_cost, cache_miss_input_cost, output_cost,
  cache_hit_input_cost + cache_miss_input_cost + output_cost AS total_cost,
  IFNULL(currency, 'USD') AS currency, @run_id AS run_id, @now AS calculated_at
FROM costed
"""


class DeepSeekCost(CostCalculation):
    source_default = ("deepseek_usage_daily_raw", "configs/deepseek/schemas/deepseek_usage_daily_raw.json")
    pricing_default = ("deepseek_model_pricing", "configs/deepseek/seed/schemas/deepseek_pricing.json")
    target_default = ("deepseek_cost_daily", "configs/deepseek/schemas/deepseek_cost_daily.json")

    def select_sql(self, raw: str, pricing: str) -> str:
        return _SELECT.format(raw=raw, pricing=pricing)


def get_engine() -> DeepSeekCost:
    return DeepSeekCost()
