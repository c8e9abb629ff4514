"""ps_type `focus.openai`: OpenAI billed costs (`openai_billed_cost_daily_raw`, Costs API) and, for days
without them, the calculated cost (`openai_cost_daily`) as FOCUS rows (see processors/focus/_llm.py).

Config (all optional): start_date/end_date (else run parameters, else yesterday), max_range_days,
billing_account_id (default: the org slug) and its name (billing_account_names {id: name}, else
billing_account_name, else the id), sub_account_names {project id: name} (else the id),
billed/calculated {table, schema_file}, destination {table, schema_file}.
"""

from __future__ import annotations

from collections.abc import Mapping

from convergence.processors.focus._llm import LlmFocusSource, TokenLine


class OpenAIFocus(LlmFocusSource):
    source = "openai"
    provider = "OpenAI"
    service = "OpenAI API"
    inputs = {
        "billed": ("openai_billed_cost_daily_raw", "configs/openai/cost/schemas/openai_billed_cost_daily_raw.json"),
        "calculated": ("openai_cost_daily", "configs/openai/cost/schemas/openai_cost_daily.json"),
    }
    billed_columns = ("cost_date", "bucket_start", "bucket_end", "project_id", "line_item", "model", "token_type",
                      "amount_usd", "currency", "quantity", "quantity_unit")
    calculated_columns = ("cost_date", "project_id", "model", "batch", "service_tier", "currency")
    token_lines = (
        TokenLine("input", "input_uncached_tokens", "input_cost"),
        TokenLine("cached input", "input_cached_tokens", "cached_input_cost"),
        TokenLine("cache write", "input_cache_write_tokens", "cache_write_cost"),
        TokenLine("output", "output_tokens", "output_cost"),
    )

    def billed_branch(self, refs: Mapping[str, str]) -> dict[str, str]:
        return {
            "ChargeDescription": "IFNULL(line_item, 'OpenAI API usage')",
            "SkuId": "IFNULL(model, line_item)", "SkuMeter": "token_type", "x_TokenType": "token_type",
            "ConsumedQuantity": "quantity", "ConsumedUnit": "quantity_unit",
            "PricingQuantity": "quantity", "PricingUnit": "quantity_unit",
        }

    def calculated_branch(self, refs: Mapping[str, str]) -> dict[str, str]:
        return {"x_ServiceTier": "CASE WHEN batch THEN 'batch' ELSE service_tier END"}


def get_engine() -> OpenAIFocus:
    return OpenAIFocus()
