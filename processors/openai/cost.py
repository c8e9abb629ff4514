"""ps_type `openai.cost`: daily cost per (date, project, model, batch, service tier) from
`openai_usage_daily_raw` x the org's `openai_model_pricing`, computed inside BigQuery in one MERGE job
that replaces the org's rows for the date range in `openai_cost_daily`.

Pricing: a row applies from its `effective_date` until the next row's for the same `model_id`; an exact
snapshot row (`gpt-4o-2024-08-06`) wins over the family row (`gpt-4o`). Token types and prices:
uncached input x input price, cached input x cached price (null: input price), cache writes x
cache-write price (null: input price), output x output price; batch usage x `batch_multiplier`.
Usage without a matching price gets `is_priced = false` and null costs, and is reported in the result.

Config (all optional): start_date/end_date (e.g. `{extract_usage.start_date}`), max_range_days,
source {table, schema_file}, pricing {table, schema_file}, destination {table, schema_file,
partitioning, clustering}.
"""

from __future__ import annotations

from convergence.processors._llm.calc import CostCalculation

_SELECT = """
WITH usage AS (
  SELECT cost_date, project_id, model, MAX(model_base) AS model_base, batch, service_tier,
    SUM(num_model_requests) AS num_model_requests,
    SUM(input_uncached_tokens) AS input_uncached_tokens,
    SUM(input_cached_tokens) AS input_cached_tokens,
    SUM(input_cache_write_tokens) AS input_cache_write_tokens,
    SUM(output_tokens) AS output_tokens
  FROM (
    SELECT usage_date AS cost_date, project_id, model, model_base, IFNULL(batch, FALSE) AS batch, service_tier,
      num_model_requests, input_uncached_tokens, input_cached_tokens, input_cache_write_tokens, output_tokens
    FROM {raw}
    WHERE org_slug = @org_slug AND usage_date BETWEEN @start_date AND @end_date
  ) AS raw_rows
  GROUP BY cost_date, project_id, model, batch, service_tier
),
prices AS (
  SELECT model_id, effective_date,
    LEAD(effective_date) OVER (PARTITION BY model_id ORDER BY effective_date) AS next_effective_date,
    input_price_per_1m,
    IFNULL(cached_input_price_per_1m, input_price_per_1m) AS cached_input_price_per_1m,
    IFNULL(cache_write_price_per_1m, input_price_per_1m) AS cache_write_price_per_1m,
    output_price_per_1m,
    IFNULL(batch_multiplier, 1) AS batch_multiplier,
    currency
  FROM {pricing}
  WHERE org_slug = @org_slug
),
matched AS (
  SELECT u.cost_date, u.project_id, u.model, u.model_base, u.batch, u.service_tier, u.num_model_requests,
    u.input_uncached_tokens, u.input_cached_tokens, u.input_cache_write_tokens, u.output_tokens,
    p.model_id AS pricing_model_id, p.effective_date AS pricing_effective_date,
    p.input_price_per_1m, p.cached_input_price_per_1m, p.cache_write_price_per_1m, p.output_price_per_1m,
    CASE WHEN p.model_id IS NULL THEN NULL WHEN u.batch THEN p.batch_multiplier ELSE 1 END AS price_multiplier,
    p.currency,
    ROW_NUMBER() OVER (
      PARTITION BY u.cost_date, u.project_id, u.model, u.batch, u.service_tier
      ORDER BY CASE WHEN p.model_id = u.model THEN 0 ELSE 1 END
    ) AS price_rank
  FROM usage AS u
  LEFT JOIN prices AS p
    ON (p.model_id = u.model OR p.model_id = u.model_base)
    AND u.cost_date >= p.effective_date
    AND (p.next_effective_date IS NULL OR u.cost_date < p.next_effective_date)
),
costed AS (
  SELECT *,
    input_uncached_tokens * input_price_per_1m * price_multiplier / 1000000 AS input_cost,
    input_cached_tokens * cached_input_price_per_1m * price_multiplier / 1000000 AS cached_input_cost,
    input_cache_write_tokens * cache_write_price_per_1m * price_multiplier / 1000000 AS cache_write_cost,
    output_tokens * output_price_per_1m * price_multiplier / 1000000 AS output_cost
  FROM matched
  WHERE price_rank = 1
)
SELECT @org_slug AS org_slug, cost_date, project_id, model, model_base, batch, service_tier,
  pricing_model_id IS NOT NULL AS is_priced, pricing_model_id, pricing_effective_date,
  num_model_requests, input_uncached_tokens, input_cached_tokens, input_cache_write_tokens, output_tokens,
  input_uncached_tokens + input_cached_tokens + input_cache_write_tokens + output_tokens AS total_tokens,
  input_price_per_1m, cached_input_price_per_1m, cache_write_price_per_1m, output_price_per_1m, price_multiplier,
  input_cost, cached_input_cost, cache_write_cost, output_cost,
  input_cost + cached_input_cost + cache_write_cost + output_cost AS total_cost,
  IFNULL(currency, 'USD') AS currency, @run_id AS run_id, @now AS calculated_at
FROM costed
"""


class OpenAICost(CostCalculation):
    source_default = ("openai_usage_daily_raw", "configs/openai/cost/schemas/openai_usage_daily_raw.json")
    pricing_default = ("openai_model_pricing", "configs/openai/seed/schemas/openai_pricing.json")
    target_default = ("openai_cost_daily", "configs/openai/cost/schemas/openai_cost_daily.json")

    def select_sql(self, raw: str, pricing: str) -> str:
        return _SELECT.format(raw=raw, pricing=pricing)


def get_engine() -> OpenAICost:
    return OpenAICost()
