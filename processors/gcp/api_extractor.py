"""ps_type `gcp.api_extractor`: any Google REST API (Cloud Billing, Compute, Monitoring, IAM, ...) with the
org's service-account key, `nextPageToken` pagination, rows stored as raw JSON (ELT).

    config:
      service: cloudbilling                          # API host name: {service}.googleapis.com
      path: /v1/billingAccounts                      # may use {project_id} (the key's project by default)
      params: {pageSize: 100}
      scopes: [https://www.googleapis.com/auth/cloud-billing.readonly]
      data_path: billingAccounts                     # compute aggregated lists: items.*.instances
      page_size_param: pageSize                      # added with page_size (compute: maxResults)
      page_size: 100
      credential: {provider: GCP_SA, secret_key: gcp_sa}   # resolution order: convergence/extractors/credentials.py
      destination: {table: gcp_billing_accounts_raw, write_mode: overwrite, key_fields: [name]}
      rate_limit: {requests_per_second: 5}

The base URL comes from the setting `gcp_api_url_template` ("https://{service}.googleapis.com"), so a
local stand-in can serve every API. The access token comes from the key's `token_uri` via google-auth.
"""

from __future__ import annotations

import re
from typing import Any

from convergence.extractors.credentials import resolve_credential
from convergence.extractors.paginators import CursorPaginator
from convergence.extractors.request import PageRequest
from convergence.extractors.retry import http_limits
from convergence.pipeline.context import RunContext, resolve_placeholders
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.processors.gcp._auth import GoogleServiceAccountAuth, ServiceAccountKey
from convergence.processors.generic._common import bool_option, int_option, invalid, section
from convergence.processors.generic._extract import DEFAULT_RETRY, build_sink, extract_to_table

_SERVICE = re.compile(r"^[a-z][a-z0-9\-]{1,62}$")
_PATH = re.compile(r"^/[A-Za-z0-9_\-./:~%@]*$")
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform.read-only",)


async def service_account(context: RunContext, spec: dict[str, Any]) -> tuple[ServiceAccountKey, str]:
    provider = spec.get("provider", "GCP_SA")
    credential = await resolve_credential(context, provider, spec.get("secret_key"))
    if credential is None:
        raise invalid("credential.provider or credential.secret_key is required")
    return ServiceAccountKey.parse(credential.value), credential.source


class GcpApiExtractor:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        services = context.services
        settings = services.settings
        credential_spec = resolve_placeholders(dict(step.config.get("credential") or {}), context.lookup(),
                                               context.outputs)
        key, source = await service_account(context, credential_spec)
        names = {"project_id": key.project_id, **context.lookup()}
        config = resolve_placeholders({k: v for k, v in step.config.items() if k != "credential"}, names,
                                      context.outputs)
        service = str(config.get("service") or "")
        path = str(config.get("path") or "")
        if not _SERVICE.match(service):
            raise invalid(f"service {service!r} must be a Google API name such as cloudbilling or compute")
        if not _PATH.match(path) or ".." in path:
            raise invalid(f"path {path!r} must be an absolute API path such as /v1/billingAccounts")
        base = settings.gcp_api_url_template.replace("{service}", service).rstrip("/")
        url = base + path
        scopes = config.get("scopes") or list(DEFAULT_SCOPES)
        if not isinstance(scopes, list) or not all(isinstance(s, str) and s.startswith("https://") for s in scopes):
            raise invalid("scopes must be a list of OAuth scope URLs")
        params = section(config, "params")
        page_size_param = config.get("page_size_param", "pageSize")
        page_size = int_option(config, "page_size", None, 1, 5000)
        paginator = CursorPaginator(param="pageToken", response_path=str(config.get("next_page_path", "nextPageToken")),
                                    limit_param=page_size_param if page_size else None, limit=page_size)
        auth = GoogleServiceAccountAuth(key, tuple(sorted(scopes)), settings)
        destination = section(config, "destination")
        batch_size = int_option(destination, "batch_size", settings.write_batch_size, 1, 50_000) or 1000
        sink = build_sink(services, context, step, destination, url, config)
        limits = http_limits(config, default=DEFAULT_RETRY)
        http = services.http(f"gcp:{service}", rate_per_second=limits.rate_per_second, policy=limits.policy)
        result = await extract_to_table(
            http=http, request=PageRequest("GET", url, params, {"Accept": "application/json"}), auth=auth,
            paginator=paginator, data_path=config.get("data_path"), sink=sink, batch_size=batch_size,
            max_pages=int_option(config, "max_pages", 100_000, 1, 10_000_000) or 100_000,
            overlap=bool_option(destination, "overlap_writes", True))
        result.update({"service": service, "credential_source": source, "service_account": key.client_email,
                       "token_fetches": auth.token_fetches})
        return result


def get_engine() -> GcpApiExtractor:
    return GcpApiExtractor()
