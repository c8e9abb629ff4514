"""ps_type `anthropic.usage`: the Admin API usage report (`GET /v1/organizations/usage_report/messages`)
into `anthropic_usage_daily_raw`, streamed in batches, idempotent per (org, date range).

Headers `x-api-key` (admin key) and `anthropic-version`; arrays in bracket form (`group_by[]=model`, at
most 5 dimensions); cache writes come from the nested `cache_creation` object, split by TTL.

Config (all optional):
  secret_name        context.secrets key of the admin key (default `anthropic`; else the credential store)
  (the base URL is the setting ANTHROPIC_BASE_URL, never step config)
  anthropic_version  default 2023-06-01;  anthropic_beta (optional header)
  bucket_width       1d (1h, 1m)
  group_by           default [workspace_id, model, service_tier, context_window] (max 5)
  page_limit         buckets per page, default the maximum (31 / 168 / 1440)
  models, workspace_ids   filters
  max_range_days, retry, rate_limit_per_second, destination {table, schema_file, partitioning, clustering}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, invalid
from convergence.processors._llm.extract import Extraction, ReportRequest, Stats, require_dict, require_list
from convergence.processors._llm.params import DateRange, choice, int_setting, plain_list, string_list
from convergence.processors._llm.values import BadValue, model_base, now_iso, to_int
from convergence.processors.anthropic._api import admin_headers, bucket_day, rfc3339_window

MAX_LIMIT = {"1d": 31, "1h": 168, "1m": 1440}
GROUPS = ("api_key_id", "workspace_id", "model", "service_tier", "context_window", "inference_geo")
DEFAULT_GROUP_BY = ["workspace_id", "model", "service_tier", "context_window"]


class AnthropicUsage(Extraction):
    provider = "anthropic"
    credential_provider = "ANTHROPIC"
    default_table = "anthropic_usage_daily_raw"
    default_schema_file = "configs/anthropic/schemas/anthropic_usage_daily_raw.json"
    date_column = "usage_date"

    def base_url(self, context: RunContext, config: Mapping[str, Any]) -> str:
        return context.services.settings.anthropic_base_url

    def requests(self, base_url: str, secret: str, config: Mapping[str, Any], dates: DateRange) -> list[ReportRequest]:
        width = choice(config, "bucket_width", "1d", tuple(MAX_LIMIT))
        limit = int_setting(config, "page_limit", MAX_LIMIT[width], 1, MAX_LIMIT[width])
        group_by = string_list(config, "group_by", DEFAULT_GROUP_BY, GROUPS)
        if len(group_by) > 5:
            raise invalid("group_by: the usage report accepts at most 5 dimensions", ErrorCode.INVALID_PARAMETERS)
        params = [*rfc3339_window(dates), ("bucket_width", width), ("limit", str(limit))]
        params += [("group_by[]", g) for g in group_by]
        for name in ("models", "workspace_ids"):
            params += [(f"{name}[]", v) for v in plain_list(config, name)]
        return [ReportRequest(f"{base_url}/v1/organizations/usage_report/messages", params,
                              admin_headers(secret, config), "usage_report", {"bucket_width": width})]

    def page_rows(self, body: dict[str, Any], request: ReportRequest, dates: DateRange, context: RunContext,
                  stats: Stats) -> Iterator[dict[str, Any]]:
        ingested = now_iso()
        for index, raw_bucket in enumerate(body["data"]):
            bucket = require_dict(raw_bucket, f"data[{index}]")
            day, start, end = bucket_day(bucket, index)
            results = require_list(bucket.get("results"), f"data[{index}].results")
            if not dates.start.isoformat() <= day <= dates.end.isoformat():
                stats.skipped_buckets += 1
                continue
            for position, raw in enumerate(results):
                where = f"data[{index}].results[{position}]"
                r = require_dict(raw, where)
                cache = r.get("cache_creation") or {}
                tools = r.get("server_tool_use") or {}
                if not isinstance(cache, dict) or not isinstance(tools, dict):
                    raise BadValue(f"{where}: cache_creation and server_tool_use must be objects")
                model = r.get("model")
                row = {
                    "org_slug": context.org_slug, "usage_date": day, "bucket_start": start, "bucket_end": end,
                    "bucket_width": request.meta["bucket_width"], "api_key_id": r.get("api_key_id"),
                    "workspace_id": r.get("workspace_id"), "model": model, "model_base": model_base(model),
                    "service_tier": r.get("service_tier"), "context_window": r.get("context_window"),
                    "inference_geo": r.get("inference_geo"),
                    "uncached_input_tokens": to_int(r.get("uncached_input_tokens"), f"{where}.uncached_input_tokens"),
                    "cache_read_input_tokens": to_int(r.get("cache_read_input_tokens", 0),
                                                      f"{where}.cache_read_input_tokens"),
                    "cache_creation_5m_input_tokens": to_int(cache.get("ephemeral_5m_input_tokens", 0),
                                                             f"{where}.cache_creation.ephemeral_5m_input_tokens"),
                    "cache_creation_1h_input_tokens": to_int(cache.get("ephemeral_1h_input_tokens", 0),
                                                             f"{where}.cache_creation.ephemeral_1h_input_tokens"),
                    "output_tokens": to_int(r.get("output_tokens"), f"{where}.output_tokens"),
                    "web_search_requests": to_int(tools.get("web_search_requests", 0),
                                                  f"{where}.server_tool_use.web_search_requests"),
                    "run_id": context.run_id, "ingested_at": ingested,
                }
                if model:
                    stats.models.add(model)
                stats.add("uncached_input_tokens", row["uncached_input_tokens"])
                stats.add("cache_read_input_tokens", row["cache_read_input_tokens"])
                stats.add("cache_write_input_tokens",
                          row["cache_creation_5m_input_tokens"] + row["cache_creation_1h_input_tokens"])
                stats.add("output_tokens", row["output_tokens"])
                stats.add("web_search_requests", row["web_search_requests"])
                yield row


def get_engine() -> AnthropicUsage:
    return AnthropicUsage()
