"""ps_type `generic.api_extractor`: any REST API into a table of the org's dataset (ELT: load
the records, transform them later with SQL).

Config (placeholders such as `{start_date}` are resolved from the run first):

    url: "https://api.vendor.com/v1/users"       # http(s); checked by the SSRF guard in production
    method: GET                                   # GET | POST
    params: {status: active}                      # query parameters of the first page
    headers: {Accept: application/json}
    body: {...}                                   # JSON body (POST)
    auth:
      type: bearer | header | query | basic | none
      provider: VENDOR_API                        # credential: context secrets, then org_integration_credentials
      secret_key: vendor_token                    # ...then context.secrets[secret_key]
      header_name: X-API-Key                      # header
      prefix: ""                                  # header: e.g. "Token "
      param_name: api_key                         # query
      username: ...                               # basic (else from the secret: JSON or "user:password")
    pagination:                                   # see convergence/extractors/paginators.py
      type: cursor | offset | page | link | none
      param / response_path / limit / limit_param / has_more_path       (cursor)
      limit / offset_param / limit_param / total_path                    (offset)
      page_param / start_page / limit / limit_param / total_pages_path   (page)
      next_url_path (body) or none (Link header) / allow_other_hosts     (link)
    data_path: "data"                             # where the records are in a page (`items.*.list` ok)
    max_pages: 100000
    destination:
      table: vendor_users_raw
      schema_file: configs/vendor/schemas/users.json   # typed table; without it the raw-JSON ELT table
      batch_size: 1000                            # rows per batch spooled (memory: at most two batches);
                                                  # the whole step is one write: one load job (_sink.py)
      overlap_writes: true                        # spool a batch while the next pages are fetched
      write_mode: append | overwrite | range_replace | merge
      key_columns: [id]                           # merge (ELT default: row_key)
      key_fields: [id]                            # ELT: row_key = hash of these record fields
      date_column: usage_date                     # range_replace, with the run's start_date/end_date
      field_map: {user_id: "id", plan: "attributes.plan"}   # typed: column <- record path
      partition_field: extracted_at               # used when the table is created (ELT default)
      cluster_fields: [step_id]
    rate_limit: {requests_per_second: 10}
    retry: {attempts: 6, initial_seconds: 0.5, max_seconds: 30, max_retry_after_seconds: 60}
                                                  # see convergence/extractors/retry.py (old spellings too)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from convergence.extractors.auth import build_auth
from convergence.extractors.credentials import resolve_credential
from convergence.extractors.paginators import build_paginator
from convergence.extractors.request import PageRequest
from convergence.extractors.retry import http_limits
from convergence.pipeline.context import RunContext
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.processors.generic._common import (
    bool_option,
    int_option,
    invalid,
    section,
)
from convergence.processors.generic._extract import DEFAULT_RETRY, build_sink, extract_to_table

METHODS = ("GET", "POST")


class ApiExtractor:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        services = context.services
        url = config.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise invalid(f"url {url!r} must be an absolute http(s) URL")
        method = str(config.get("method") or "GET").upper()
        if method not in METHODS:
            raise invalid(f"method {method!r} is not one of {', '.join(METHODS)}")
        params = section(config, "params")
        headers = {str(k): str(v) for k, v in section(config, "headers").items()}
        auth_spec = section(config, "auth")
        destination = section(config, "destination")
        batch_size = int_option(destination, "batch_size", services.settings.write_batch_size, 1, 50_000) or 1000
        max_pages = int_option(config, "max_pages", 100_000, 1, 10_000_000) or 100_000

        auth_type = str(auth_spec.get("type") or "none").lower()
        credential = None
        if auth_type != "none":
            credential = await resolve_credential(context, auth_spec.get("provider"), auth_spec.get("secret_key"))
        auth = build_auth(auth_spec, credential.value if credential else None)
        paginator = build_paginator(section(config, "pagination"))
        source_url = url.split("?", 1)[0]
        sink = build_sink(services, context, step, destination, source_url, config)
        provider = str(auth_spec.get("provider") or urlsplit(url).hostname)
        limits = http_limits(config, default=DEFAULT_RETRY)
        http = services.http(provider, rate_per_second=limits.rate_per_second, policy=limits.policy)
        request = PageRequest(method, url, params, headers, config.get("body"))
        result = await extract_to_table(http=http, request=request, auth=auth, paginator=paginator,
                                        data_path=config.get("data_path"), sink=sink, batch_size=batch_size,
                                        max_pages=max_pages,
                                        overlap=bool_option(destination, "overlap_writes", True))
        result["pagination"] = paginator.type
        result["auth_type"] = auth.type
        if credential is not None:
            result["credential_source"] = credential.source
        return result


def get_engine() -> ApiExtractor:
    return ApiExtractor()
