"""ps_type `focus.anthropic`: Anthropic billed costs (`anthropic_billed_cost_daily_raw`, cost report) and,
for days without them, the calculated cost (`anthropic_cost_daily`) as FOCUS rows
(see processors/focus/_llm.py). Workspaces are the sub-accounts; inference_geo is the region.

Config: as focus.openai (workspace names from the Admin API; sub_account_names keyed by workspace id), and
anthropic_version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.processors._llm.client import http_client
from convergence.processors._llm.names import listed_names
from convergence.processors.anthropic._api import admin_headers
from convergence.processors.focus._llm import LlmFocusSource, TokenLine


class AnthropicFocus(LlmFocusSource):
    source = "anthropic"
    provider = "Anthropic"
    service = "Claude API"
    credential_provider = "ANTHROPIC"
    names_table = ("anthropic_workspaces", "workspace_id")
    sub_account = ("workspace_id", "Workspace")
    inputs = {
        "billed": ("anthropic_billed_cost_daily_raw", "configs/anthropic/schemas/anthropic_billed_cost_daily_raw.json"),
        "calculated": ("anthropic_cost_daily", "configs/anthropic/schemas/anthropic_cost_daily.json"),
    }
    billed_columns = ("cost_date", "bucket_start", "bucket_end", "workspace_id", "description", "cost_type", "model",
                      "token_type", "service_tier", "context_window", "inference_geo", "amount_usd", "currency")
    calculated_columns = ("cost_date", "workspace_id", "model", "service_tier", "context_window", "currency")
    # Token type labels as in the cost report (and processors/anthropic/reconcile.py).
    token_lines = (
        TokenLine("uncached_input_tokens", "uncached_input_tokens", "uncached_input_cost"),
        TokenLine("cache_read_input_tokens", "cache_read_input_tokens", "cache_read_cost"),
        TokenLine("cache_creation.ephemeral_5m_input_tokens", "cache_creation_5m_input_tokens", "cache_write_5m_cost"),
        TokenLine("cache_creation.ephemeral_1h_input_tokens", "cache_creation_1h_input_tokens", "cache_write_1h_cost"),
        TokenLine("output_tokens", "output_tokens", "output_cost"),
        TokenLine("web_search", "web_search_requests", "web_search_cost", unit="Requests"),
    )

    async def provider_names(self, secret: str, config: Mapping[str, Any], context: RunContext) -> dict[str, str]:
        # Admin API workspace list: at most 1,000 per page, `after_id` = the last id. The default workspace has
        # no id (workspace_id NULL in the reports), so it has no sub-account and needs no name.
        url = f"{context.services.settings.anthropic_base_url}/v1/organizations/workspaces"
        return await listed_names(http_client(context, "anthropic", config), url,
                                  [("limit", "1000"), ("include_archived", "true")], admin_headers(secret, config),
                                  "after_id", "anthropic")

    def billed_branch(self, refs: Mapping[str, str]) -> dict[str, str]:
        meter = "CASE WHEN cost_type IS NULL OR cost_type = 'tokens' THEN token_type ELSE cost_type END"
        return {
            "ChargeDescription": "IFNULL(description, CONCAT('Claude API ', IFNULL(cost_type, 'usage')))",
            "SkuId": "IFNULL(model, cost_type)", "SkuMeter": meter, "x_TokenType": meter,
            "RegionId": "inference_geo", "RegionName": "inference_geo", "x_ServiceTier": "service_tier",
        }

    def calculated_branch(self, refs: Mapping[str, str]) -> dict[str, str]:
        return {"x_ServiceTier": "service_tier"}


def get_engine() -> AnthropicFocus:
    return AnthropicFocus()
