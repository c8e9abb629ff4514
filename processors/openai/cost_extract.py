"""ps_type `openai.cost_extract`: OpenAI's own billed costs (`GET /v1/organization/costs`, daily buckets)
into `openai_billed_cost_daily_raw`, streamed in batches, idempotent per (org, date range).

The Costs API is the one that reconciles to the invoice. Amounts are parsed as decimals whether
they come as JSON numbers or as long decimal strings; `line_item` ("gpt-4o-2024-08-06, cached
input") is split into model and token type for the reconciliation.

Config (all optional): secret_name, group_by (default [line_item, project_id]; api_key_id is
refused by the live API), page_limit (default 180), array_format, project_ids, max_range_days,
retry, rate_limit_per_second, destination {table, schema_file, partitioning, clustering}.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.processors._llm.extract import Extraction, ReportRequest, Stats, require_dict, require_list
from convergence.processors._llm.params import DateRange, choice, int_setting, plain_list, string_list
from convergence.processors._llm.values import (
    BadValue,
    epoch_to_iso,
    model_base,
    now_iso,
    numeric_text,
    to_decimal,
    usd_text,
)
from convergence.processors.openai._api import array_params, bearer_headers, time_params

OTHER = "other"
_LINE_ITEM = re.compile(r"^(?P<model>[^\s,]+)(?: (?P<modality>[a-z_]+))?, (?P<kind>input|cached input|output)$")


def parse_line_item(line_item: str | None) -> tuple[str | None, str | None]:
    """(model, token_type) of a line item; ("<item>", "other") for items that are not per-token."""
    if line_item is None:
        return None, None
    match = _LINE_ITEM.match(line_item.strip())
    if not match:
        return line_item, OTHER
    return match.group("model"), match.group("kind")


class OpenAICostExtract(Extraction):
    provider = "openai"
    credential_provider = "OPENAI"
    default_table = "openai_billed_cost_daily_raw"
    default_schema_file = "configs/openai/cost/schemas/openai_billed_cost_daily_raw.json"
    date_column = "cost_date"

    def base_url(self, context: RunContext, config: Mapping[str, Any]) -> str:
        return context.services.settings.openai_base_url

    def requests(self, base_url: str, secret: str, config: Mapping[str, Any], dates: DateRange) -> list[ReportRequest]:
        group_by = string_list(config, "group_by", ["line_item", "project_id"],
                               ("line_item", "project_id", "api_key_id"))
        limit = int_setting(config, "page_limit", 180, 1, 180)
        array_format = choice(config, "array_format", "repeat", ("repeat", "brackets"))
        params = [*time_params(dates), ("bucket_width", "1d"), ("limit", str(limit))]
        params += array_params("group_by", group_by, array_format)
        if config.get("project_ids"):
            params += array_params("project_ids", plain_list(config, "project_ids"), array_format)
        return [ReportRequest(f"{base_url}/v1/organization/costs", params, bearer_headers(secret), "costs")]

    def page_rows(self, body: dict[str, Any], request: ReportRequest, dates: DateRange, context: RunContext,
                  stats: Stats) -> Iterator[dict[str, Any]]:
        ingested = now_iso()
        for index, raw_bucket in enumerate(body["data"]):
            bucket = require_dict(raw_bucket, f"data[{index}]")
            start_iso = epoch_to_iso(bucket.get("start_time"), f"data[{index}].start_time")
            end_iso = epoch_to_iso(bucket.get("end_time"), f"data[{index}].end_time")
            results = require_list(bucket.get("results"), f"data[{index}].results")
            day = start_iso[:10]
            if not dates.start.isoformat() <= day <= dates.end.isoformat():
                stats.skipped_buckets += 1
                continue
            for position, raw in enumerate(results):
                where = f"data[{index}].results[{position}]"
                result = require_dict(raw, where)
                if result.get("object") != "organization.costs.result":
                    raise BadValue(f"{where}.object is {result.get('object')!r}, expected 'organization.costs.result'")
                amount = require_dict(result.get("amount"), f"{where}.amount")
                value = to_decimal(amount.get("value"), f"{where}.amount.value")
                currency = amount.get("currency")
                if not isinstance(currency, str) or not currency:
                    raise BadValue(f"{where}.amount.currency is {currency!r}")
                quantity = result.get("quantity")
                line_item = result.get("line_item")
                model, token_type = parse_line_item(line_item)
                per_token = token_type not in (None, OTHER)
                if model and per_token:
                    stats.models.add(model)
                stats.add_amount("billed", value)
                yield {
                    "org_slug": context.org_slug, "cost_date": day, "bucket_start": start_iso, "bucket_end": end_iso,
                    "project_id": result.get("project_id"), "line_item": line_item, "model": model,
                    "model_base": model_base(model) if per_token else None, "token_type": token_type,
                    "amount_usd": numeric_text(value), "currency": currency.upper(),
                    "quantity": None if quantity is None else numeric_text(to_decimal(quantity, f"{where}.quantity")),
                    "quantity_unit": result.get("quantity_unit"), "run_id": context.run_id, "ingested_at": ingested,
                }

    def summary(self, stats: Stats) -> dict[str, Any]:
        return {"billed_total_usd": usd_text(stats.amounts.get("billed", Decimal(0)))}


def get_engine() -> OpenAICostExtract:
    return OpenAICostExtract()
