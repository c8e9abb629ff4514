"""Talking to a provider's admin API: the credential, a retrying HTTP client, cursor pagination."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from convergence.extractors.retry import http_limits
from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, PermanentStepError
from convergence.processors.integrations.kms_decrypt import decrypt_credential

MAX_PAGES = 100_000


async def provider_secret(config: Mapping[str, Any], context: RunContext, provider: str) -> str:
    """The org's credential for `provider`: `context.secrets[secret_name]` (put there by an
    integrations.kms_decrypt step), else decrypted now from the credential store. Either way it is kept
    in `context.secrets`, so the executor masks it in every result, error and event."""
    name = str(config.get("secret_name") or provider.lower())
    secret = context.secrets.get(name)
    if secret:
        return secret
    secret = await decrypt_credential(context, provider)
    context.secrets[name] = secret
    return secret


def http_client(context: RunContext, provider: str, config: Mapping[str, Any]) -> Any:
    """The provider's retrying client, its rate and retries from `retry`/`rate_limit` (extractors.retry)."""
    limits = http_limits(config, code=ErrorCode.INVALID_PARAMETERS)
    return context.services.http(provider, rate_per_second=limits.rate_per_second, policy=limits.policy)


class MalformedPage(PermanentStepError):
    code = ErrorCode.PROVIDER_BAD_RESPONSE


async def pages(http: Any, url: str, params: Sequence[tuple[str, str]], headers: Mapping[str, str],
                provider: str) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """Yield (page number, body) following `has_more` / `next_page` until the last page."""
    cursor: str | None = None
    seen: set[str] = set()
    for number in range(1, MAX_PAGES + 1):
        query = list(params) + ([("page", cursor)] if cursor else [])
        body, _ = await http.request_json("GET", url, params=query, headers=headers)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise MalformedPage(f"{provider}: page {number} from {url} has no 'data' list")
        yield number, body
        if not body.get("has_more"):
            return
        cursor = body.get("next_page")
        if not isinstance(cursor, str) or not cursor:
            raise MalformedPage(f"{provider}: page {number} says has_more but gives no next_page cursor")
        if cursor in seen:
            raise MalformedPage(f"{provider}: page {number} repeats an earlier next_page cursor (pagination loop)")
        seen.add(cursor)
    raise MalformedPage(f"{provider}: more than {MAX_PAGES} pages from {url}; refusing to continue")
