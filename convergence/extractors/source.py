"""Fetch pages one after another and yield each page's rows: nothing holds more than one page.

The HTTP client is the platform's (`services.http`): it throttles to the configured rate, retries
429/5xx with exponential backoff honouring Retry-After, maps 401/403 to PROVIDER_AUTH_FAILED and runs
the SSRF guard on every URL, including next-page links.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from convergence.extractors.auth import Auth
from convergence.extractors.jsonpath import select_rows
from convergence.extractors.paginators import Paginator
from convergence.extractors.request import PageRequest
from convergence.pipeline.errors import ErrorCode, PermanentStepError, StepError


@dataclass
class Page:
    number: int  # 1-based
    url: str  # without its query string
    rows: list[Any]
    body: Any
    headers: Mapping[str, str]


class PageFetchError(Exception):
    """Fetching page `page` failed; `cause` is the step error from the HTTP client or the paginator."""

    def __init__(self, page: int, cause: StepError):
        self.page = page
        self.cause = cause
        super().__init__(f"page {page}: {cause}")


async def iter_pages(http: Any, request: PageRequest, auth: Auth, paginator: Paginator, data_path: str | None,
                     max_pages: int = 100_000) -> AsyncIterator[Page]:
    """Yield page 1, 2, ... until the paginator says there is no next page.

    A failure while fetching or reading page N raises PageFetchError(N): the caller has everything of
    pages 1..N-1 and can keep it."""
    paginator.start(request)
    number = 0
    while True:
        number += 1
        if number > max_pages:
            raise PageFetchError(number, PermanentStepError(
                f"more than max_pages={max_pages} pages; raise max_pages if the API really has that many",
                code=ErrorCode.TOO_MANY_PAGES))
        try:
            await auth.prepare()
            sent = request.copy()
            auth.apply(sent)
            body, headers = await http.request_json(sent.method, sent.url, params=sent.query_params() or None,
                                                    headers=sent.headers or None, json=sent.json)
            rows = select_rows(body, _data_path(data_path))
        except StepError as error:
            raise PageFetchError(number, error) from None
        yield Page(number, request.url.split("?", 1)[0], rows, body, headers)
        try:
            more = paginator.advance(request, body, headers, len(rows))
        except StepError as error:
            raise PageFetchError(number + 1, error) from None
        if not more:
            return


def _data_path(path: str | None) -> str | None:
    return path if path not in ("", ".", "$") else None
