"""ps_type `openai.usage`: the Organization Usage API (`GET /v1/organization/usage/{completions,embeddings}`)
into `openai_usage_daily_raw`, streamed in batches, idempotent per (org, date range).

Config (all optional):
  secret_name       context.secrets key holding the admin key (default `openai`; else the credential store)
                    (the base URL is the setting OPENAI_BASE_URL, never step config)
  endpoints         [completions] (also: embeddings)
  bucket_width      1d (1h, 1m)
  group_by          completions grouping, default [project_id, model, batch, service_tier]
                    (embeddings use the ones that apply to them)
  page_limit        buckets per page, default the API maximum (31 / 168 / 1440)
  array_format      repeat (group_by=a&group_by=b) or brackets (group_by[]=a), both accepted by the API
  project_ids, models   filters
  max_range_days    default 93
  retry             {attempts, initial_seconds, max_seconds};  rate_limit_per_second
  destination       {table: openai_usage_daily_raw, schema_file: configs/openai/cost/schemas/...,
                    partitioning (default usage_date), clustering (default [model])}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.processors._llm.extract import Extraction, ReportRequest, Stats, require_dict, require_list
from convergence.processors._llm.params import DateRange, choice, int_setting, plain_list, string_list
from convergence.processors._llm.values import BadValue, epoch_to_iso, model_base, now_iso, to_int
from convergence.processors.openai._api import array_params, bearer_headers, time_params

MAX_LIMIT = {"1d": 31, "1h": 168, "1m": 1440}
COMPLETIONS_GROUPS = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")
EMBEDDINGS_GROUPS = ("project_id", "user_id", "api_key_id", "model")
DEFAULT_GROUP_BY = ["project_id", "model", "batch", "service_tier"]


class OpenAIUsage(Extraction):
    provider = "openai"
    credential_provider = "OPENAI"
    default_table = "openai_usage_daily_raw"
    default_schema_file = "configs/openai/cost/schemas/openai_usage_daily_raw.json"
    date_column = "usage_date"

    def base_url(self, context: RunContext, config: Mapping[str, Any]) -> str:
        return context.services.settings.openai_base_url

    def requests(self, base_url: str, secret: str, config: Mapping[str, Any], dates: DateRange) -> list[ReportRequest]:
        endpoints = string_list(config, "endpoints", ["completions"], ("completions", "embeddings"))
        width = choice(config, "bucket_width", "1d", tuple(MAX_LIMIT))
        limit = int_setting(config, "page_limit", MAX_LIMIT[width], 1, MAX_LIMIT[width])
        array_format = choice(config, "array_format", "repeat", ("repeat", "brackets"))
        group_by = string_list(config, "group_by", DEFAULT_GROUP_BY, COMPLETIONS_GROUPS)
        filters = [(name, plain_list(config, name)) for name in ("project_ids", "models") if config.get(name)]
        requests = []
        for endpoint in endpoints:
            groups = group_by if endpoint == "completions" else [g for g in group_by if g in EMBEDDINGS_GROUPS]
            params = [*time_params(dates), ("bucket_width", width), ("limit", str(limit))]
            params += array_params("group_by", groups, array_format)
            for name, values in filters:
                params += array_params(name, values, array_format)
            requests.append(ReportRequest(f"{base_url}/v1/organization/usage/{endpoint}", params,
                                          bearer_headers(secret), endpoint, {"bucket_width": width}))
        return requests

    def page_rows(self, body: dict[str, Any], request: ReportRequest, dates: DateRange, context: RunContext,
                  stats: Stats) -> Iterator[dict[str, Any]]:
        expected = f"organization.usage.{request.kind}.result"
        ingested = now_iso()
        for index, raw_bucket in enumerate(body["data"]):
            bucket = require_dict(raw_bucket, f"data[{index}]")
            start = to_int(bucket.get("start_time"), f"data[{index}].start_time")
            end = to_int(bucket.get("end_time"), f"data[{index}].end_time")
            results = require_list(bucket.get("results"), f"data[{index}].results")
            start_iso = epoch_to_iso(start, "start_time")
            day = start_iso[:10]
            if not dates.start.isoformat() <= day <= dates.end.isoformat():
                stats.skipped_buckets += 1
                continue
            for position, raw in enumerate(results):
                where = f"data[{index}].results[{position}]"
                result = require_dict(raw, where)
                if result.get("object") != expected:
                    raise BadValue(f"{where}.object is {result.get('object')!r}, expected {expected!r}")
                row = self._row(result, request.kind, where)
                row.update(org_slug=context.org_slug, usage_date=day, bucket_start=start_iso,
                           bucket_end=epoch_to_iso(end, "end_time"), bucket_width=request.meta["bucket_width"],
                           endpoint=request.kind, run_id=context.run_id, ingested_at=ingested)
                if row["model"]:
                    stats.models.add(row["model"])
                stats.add("input_tokens", row["input_tokens"])
                stats.add("output_tokens", row["output_tokens"])
                stats.add("cached_input_tokens", row["input_cached_tokens"])
                yield row

    @staticmethod
    def _row(r: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
        input_tokens = to_int(r.get("input_tokens"), f"{where}.input_tokens")
        assert input_tokens is not None
        requests = to_int(r.get("num_model_requests", 0), f"{where}.num_model_requests")
        if kind == "completions":
            cached = to_int(r.get("input_cached_tokens") or 0, f"{where}.input_cached_tokens") or 0
            write = to_int(r.get("input_cache_write_tokens") or 0, f"{where}.input_cache_write_tokens") or 0
            uncached = to_int(r.get("input_uncached_tokens"), f"{where}.input_uncached_tokens", optional=True)
            if uncached is None:  # before July 2026: input_tokens includes the cached tokens
                uncached = max(0, input_tokens - cached - write)
            output = to_int(r.get("output_tokens"), f"{where}.output_tokens")
            audio_in = to_int(r.get("input_audio_tokens"), f"{where}.input_audio_tokens", optional=True)
            audio_out = to_int(r.get("output_audio_tokens"), f"{where}.output_audio_tokens", optional=True)
            batch = r.get("batch")
            if batch is not None and not isinstance(batch, bool):
                raise BadValue(f"{where}.batch is {batch!r}, not a boolean")
        else:
            cached = write = 0
            uncached, output, audio_in, audio_out, batch = input_tokens, 0, None, None, None
        model = r.get("model")
        return {
            "project_id": r.get("project_id"), "user_id": r.get("user_id"), "api_key_id": r.get("api_key_id"),
            "model": model, "model_base": model_base(model), "batch": batch, "service_tier": r.get("service_tier"),
            "input_tokens": input_tokens, "input_cached_tokens": cached, "input_cache_write_tokens": write,
            "input_uncached_tokens": uncached, "output_tokens": output, "input_audio_tokens": audio_in,
            "output_audio_tokens": audio_out, "num_model_requests": requests,
        }


def get_engine() -> OpenAIUsage:
    return OpenAIUsage()
