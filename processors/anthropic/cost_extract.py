"""ps_type `anthropic.cost_extract`: Anthropic's billed costs (`GET /v1/organizations/cost_report`, daily)
into `anthropic_billed_cost_daily_raw`, streamed in batches, idempotent per (org, date range).

`amount` is a decimal string in cents: kept as reported in `amount_cents` and converted exactly to
USD (`amount_usd` = cents / 100, Decimal). With `group_by[]=description` every row carries model,
token_type, cost_type, service tier and context window, which the reconciliation needs. Cost data lags
by about a day: run it for dates at least a day or two old.

Config (all optional): secret_name, anthropic_version, group_by (default [description,
workspace_id]), page_limit (default 31), max_range_days, retry, rate_limit_per_second,
destination {table, schema_file, partitioning, clustering}.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.processors._llm.extract import Extraction, ReportRequest, Stats, require_dict, require_list
from convergence.processors._llm.params import DateRange, int_setting, string_list
from convergence.processors._llm.values import BadValue, model_base, now_iso, numeric_text, to_decimal, usd_text
from convergence.processors.anthropic._api import admin_headers, bucket_day, rfc3339_window

HUNDRED = Decimal(100)


class AnthropicCostExtract(Extraction):
    provider = "anthropic"
    credential_provider = "ANTHROPIC"
    default_table = "anthropic_billed_cost_daily_raw"
    default_schema_file = "configs/anthropic/schemas/anthropic_billed_cost_daily_raw.json"
    date_column = "cost_date"

    def base_url(self, context: RunContext, config: Mapping[str, Any]) -> str:
        return context.services.settings.anthropic_base_url

    def requests(self, base_url: str, secret: str, config: Mapping[str, Any], dates: DateRange) -> list[ReportRequest]:
        group_by = string_list(config, "group_by", ["description", "workspace_id"], ("description", "workspace_id"))
        limit = int_setting(config, "page_limit", 31, 1, 31)
        params = [*rfc3339_window(dates), ("bucket_width", "1d"), ("limit", str(limit))]
        params += [("group_by[]", g) for g in group_by]
        return [ReportRequest(f"{base_url}/v1/organizations/cost_report", params, admin_headers(secret, config),
                              "cost_report")]

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
                amount = r.get("amount")
                if not isinstance(amount, str | int | float) or isinstance(amount, bool):
                    raise BadValue(f"{where}.amount is {amount!r}, not a decimal string in cents")
                cents = to_decimal(amount, f"{where}.amount")
                currency = r.get("currency")
                if not isinstance(currency, str) or not currency:
                    raise BadValue(f"{where}.currency is {currency!r}")
                usd = cents / HUNDRED
                model = r.get("model")
                if model:
                    stats.models.add(model)
                stats.add_amount("billed", usd)
                yield {
                    "org_slug": context.org_slug, "cost_date": day, "bucket_start": start, "bucket_end": end,
                    "workspace_id": r.get("workspace_id"), "description": r.get("description"),
                    "cost_type": r.get("cost_type"), "model": model, "model_base": model_base(model),
                    "token_type": r.get("token_type"), "service_tier": r.get("service_tier"),
                    "context_window": r.get("context_window"), "inference_geo": r.get("inference_geo"),
                    "amount_cents": str(amount), "amount_usd": numeric_text(usd), "currency": currency.upper(),
                    "run_id": context.run_id, "ingested_at": ingested,
                }

    def summary(self, stats: Stats) -> dict[str, Any]:
        return {"billed_total_usd": usd_text(stats.amounts.get("billed", Decimal(0)))}


def get_engine() -> AnthropicCostExtract:
    return AnthropicCostExtract()
