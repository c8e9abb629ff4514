"""Talking to a provider's admin API: the credential, a retrying HTTP client, the report pages (on the
extractors toolkit: iter_pages with a CursorPaginator)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from convergence.extractors.auth import NoAuth
from convergence.extractors.credentials import resolve_credential
from convergence.extractors.paginators import CursorPaginator
from convergence.extractors.request import PageRequest
from convergence.extractors.retry import http_limits
from convergence.extractors.source import Page, PageFetchError, iter_pages
from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, PermanentStepError

MAX_PAGES = 100_000


async def provider_secret(config: Mapping[str, Any], context: RunContext, provider: str) -> str:
    """The org's credential for `provider` (extractors.credentials): `context.secrets[secret_name]` (put
    there by an integrations.kms_decrypt step) first, else the credential store. Either way it is kept in
    `context.secrets`, so the executor masks it in every result, error and event."""
    name = str(config.get("secret_name") or provider.lower())
    credential = await resolve_credential(context, provider, name, named_first=True)
    assert credential is not None  # a provider is given: found, or CREDENTIAL_NOT_FOUND was raised
    context.secrets.setdefault(name, credential.value)
    return credential.value


def http_client(context: RunContext, provider: str, config: Mapping[str, Any]) -> Any:
    """The provider's retrying client, its rate and retries from `retry`/`rate_limit` (extractors.retry)."""
    limits = http_limits(config, code=ErrorCode.INVALID_PARAMETERS)
    return context.services.http(provider, rate_per_second=limits.rate_per_second, policy=limits.policy)


class MalformedPage(PermanentStepError):
    code = ErrorCode.PROVIDER_BAD_RESPONSE


def report_pages(http: Any, url: str, params: Sequence[tuple[str, str]], headers: Mapping[str, str],
                 provider: str) -> AsyncIterator[Page]:
    """The pages of one admin-API report: extractors.iter_pages with a cursor paginator that follows
    `has_more` / `next_page` (a page that says has_more without a cursor, or repeats one, is malformed)."""
    query: dict[str, Any] = {}
    for key, value in params:  # repeated keys (group_by[]) stay repeated, in order
        query.setdefault(key, []).append(value)
    request = PageRequest("GET", url, {k: v[0] if len(v) == 1 else v for k, v in query.items()}, dict(headers))
    paginator = CursorPaginator(param="page", response_path="next_page", has_more_path="has_more",
                                require_cursor=True)
    return _checked(iter_pages(http, request, NoAuth(), paginator, data_path="data", max_pages=MAX_PAGES), url,
                    provider)


async def _checked(pages: AsyncIterator[Page], url: str, provider: str) -> AsyncIterator[Page]:
    """Each page must carry a `data` list; a failed page raises the HTTP client's or paginator's error."""
    try:
        async for page in pages:
            if not isinstance(page.body, dict) or not isinstance(page.body.get("data"), list):
                raise MalformedPage(f"{provider}: page {page.number} from {url} has no 'data' list")
            yield page
    except PageFetchError as failure:
        cause = failure.cause
        if cause.code == ErrorCode.TOO_MANY_PAGES:
            raise MalformedPage(f"{provider}: more than {MAX_PAGES} pages from {url}; refusing to continue") from None
        raise cause from None  # the HTTP client's or the paginator's own error, its class and code
    finally:
        await pages.aclose()  # type: ignore[attr-defined]
