"""ps_type `focus.openai`: OpenAI billed costs (`openai_billed_cost_daily_raw`, Costs API) and, for days
without them, the calculated cost (`openai_cost_daily`) as FOCUS rows (see processors/focus/_llm.py).

Config (all optional): start_date/end_date (else run parameters, else yesterday), max_range_days,
billing_account_id (default: the org slug) and its name (billing_account_names {id: name}, else
billing_account_name, else the id), names_from_provider (default true: project names from the Admin API),
sub_account_names {project id: name} (for projects the API does not name; else the id), secret_name, retry,
billed/calculated {table, schema_file}, destination {table, schema_file}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.processors._llm.client import http_client
from convergence.processors._llm.names import listed_names
from convergence.processors.focus._llm import LlmFocusSource, TokenLine
from convergence.processors.openai._api import bearer_headers


class OpenAIFocus(LlmFocusSource):
    source = "openai"
    provider = "OpenAI"
    service = "OpenAI API"
    credential_provider = "OPENAI"
    names_table = ("openai_projects", "project_id")
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

    async def provider_names(self, secret: str, config: Mapping[str, Any], context: RunContext) -> dict[str, str]:
        # Admin API project list: at most 100 per page, `after` = the last id; archived projects still have costs.
        url = f"{context.services.settings.openai_base_url}/v1/organization/projects"
        return await listed_names(http_client(context, "openai", config), url,
                                  [("limit", "100"), ("include_archived", "true")], bearer_headers(secret), "after",
                                  "openai")

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
