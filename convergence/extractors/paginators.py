"""Paginators behind one interface, chosen by `pagination.type`:

| type     | next request                                  | stops when                                           |
|----------|-----------------------------------------------|------------------------------------------------------|
| `none`   | -                                             | after the first page                                 |
| `cursor` | `param` = value at `response_path`            | cursor missing/empty, `has_more_path` false, repeats |
| `offset` | `offset_param` += `limit`                     | short/empty page, offset >= value at `total_path`    |
| `page`   | `page_param` += 1                             | empty (or short, with `limit`) page, last page       |
| `link`   | next URL: body `next_url_path`, else `Link`   | no next link                                         |

Every paginator also honours `has_more_path` (a boolean in the body) and `max_pages`. Like dlt's
`BasePaginator`, `start(request)` prepares the first request and `advance(request, body, headers,
row_count)` says whether there is another page and updates the request for it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Self
from urllib.parse import urljoin, urlsplit

from convergence.extractors.jsonpath import get_path
from convergence.extractors.request import PageRequest
from convergence.pipeline.errors import ErrorCode, PermanentStepError, invalid

_PARAM = re.compile(r"^[A-Za-z0-9_.\-\[\]]{1,100}$")
# RFC 8288 link-value: <uri>; param=value; rel="next"
_LINK = re.compile(r'<([^>]*)>\s*((?:;\s*[^;,]+)*)')



def _param_name(spec: Mapping[str, Any], key: str, default: str | None) -> str | None:
    value = spec.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or not _PARAM.match(value):
        raise invalid(f"pagination.{key} {value!r} is not a valid query parameter name")
    return value


def _positive_int(spec: Mapping[str, Any], key: str, default: int | None, low: int = 1) -> int | None:
    value = spec.get(key, default)
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid(f"pagination.{key} {value!r} is not a whole number") from None
    if number < low:
        raise invalid(f"pagination.{key} must be at least {low}")
    return number


def _page_size(spec: Mapping[str, Any], default_param: str) -> dict[str, Any]:
    """`limit`, the page size, and `limit_param`, the query parameter that sends it (`default_param` when a
    limit is set)."""
    return {"limit_param": _param_name(spec, "limit_param", default_param if spec.get("limit") else None),
            "limit": _positive_int(spec, "limit", None)}


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


class Paginator(ABC):
    type: ClassVar[str]

    def __init__(self, has_more_path: str | None = None):
        self.has_more_path = has_more_path

    @classmethod
    def from_config(cls, spec: Mapping[str, Any]) -> Self:
        """The paginator for a step's `pagination:` block (its `type` chose this class)."""
        return cls(**cls.options(spec), has_more_path=spec.get("has_more_path"))

    @classmethod
    def options(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor's arguments from the keys of `spec` this type reads besides `has_more_path`."""
        return {}

    def start(self, request: PageRequest) -> None:
        """Set the first page's parameters."""
        return None

    @abstractmethod
    def advance(self, request: PageRequest, body: Any, headers: Mapping[str, str], row_count: int) -> bool:
        """True, with `request` updated, when another page follows the one just received."""

    def _no_more(self, body: Any) -> bool:
        if self.has_more_path is None:
            return False
        return not _truthy(get_path(body, self.has_more_path, False))


class SinglePagePaginator(Paginator):
    type = "none"

    def advance(self, request, body, headers, row_count) -> bool:
        return False


class CursorPaginator(Paginator):
    """The cursor for the next page is read from the body (`response_path`) and sent as `param`."""

    type = "cursor"

    def __init__(self, param: str = "cursor", response_path: str = "next_cursor", limit_param: str | None = None,
                 limit: int | None = None, has_more_path: str | None = None, stop_on_empty_page: bool = False,
                 require_cursor: bool = False):
        super().__init__(has_more_path)
        self.param = param
        self.response_path = response_path
        self.limit_param = limit_param
        self.limit = limit
        self.stop_on_empty_page = stop_on_empty_page
        # With has_more_path: a page that says there is more but gives no cursor is a bad response.
        self.require_cursor = require_cursor
        self._seen: set[str] = set()

    @classmethod
    def options(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        return {"param": _param_name(spec, "param", "cursor"),
                "response_path": str(spec.get("response_path") or "next_cursor"), **_page_size(spec, "limit"),
                "stop_on_empty_page": bool(spec.get("stop_on_empty_page", False)),
                "require_cursor": bool(spec.get("require_cursor", False))}

    def start(self, request: PageRequest) -> None:
        if self.limit_param and self.limit:
            request.params[self.limit_param] = self.limit

    def advance(self, request, body, headers, row_count) -> bool:
        cursor = get_path(body, self.response_path)
        if self._no_more(body):
            return False
        if cursor is None or cursor == "":
            if self.require_cursor and self.has_more_path is not None:
                raise PermanentStepError(f"the page says {self.has_more_path} but gives no {self.response_path} "
                                         "cursor", code=ErrorCode.PROVIDER_BAD_RESPONSE)
            return False
        if self.stop_on_empty_page and row_count == 0:
            return False
        cursor = str(cursor)
        if cursor in self._seen:
            raise PermanentStepError(f"the API returned cursor {cursor[:40]!r} twice; stopping to avoid a loop",
                                     code=ErrorCode.PROVIDER_BAD_RESPONSE)
        self._seen.add(cursor)
        request.params[self.param] = cursor
        return True


class OffsetPaginator(Paginator):
    type = "offset"

    def __init__(self, limit: int, offset_param: str = "offset", limit_param: str | None = "limit",
                 start_offset: int = 0, total_path: str | None = None, has_more_path: str | None = None):
        super().__init__(has_more_path)
        self.limit = limit
        self.offset_param = offset_param
        self.limit_param = limit_param
        self.offset = start_offset
        self.total_path = total_path

    @classmethod
    def options(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        if _positive_int(spec, "limit", None) is None:
            raise invalid("pagination type offset needs `limit` (the page size)")
        return {"offset_param": _param_name(spec, "offset_param", spec.get("param", "offset")),
                **_page_size(spec, "limit"), "start_offset": _positive_int(spec, "start", 0, low=0) or 0,
                "total_path": spec.get("total_path")}

    def start(self, request: PageRequest) -> None:
        request.params[self.offset_param] = self.offset
        if self.limit_param:
            request.params[self.limit_param] = self.limit

    def advance(self, request, body, headers, row_count) -> bool:
        self.offset += self.limit
        if row_count == 0 or self._no_more(body):
            return False
        if self.total_path is not None:
            total = get_path(body, self.total_path)
            if total is not None and self.offset >= int(total):
                return False
        elif self.has_more_path is None and row_count < self.limit:
            return False
        request.params[self.offset_param] = self.offset
        return True


class PageNumberPaginator(Paginator):
    type = "page"

    def __init__(self, page_param: str = "page", start_page: int = 1, limit_param: str | None = None,
                 limit: int | None = None, total_pages_path: str | None = None, has_more_path: str | None = None):
        super().__init__(has_more_path)
        self.page_param = page_param
        self.page = start_page
        self.start_page = start_page
        self.limit_param = limit_param
        self.limit = limit
        self.total_pages_path = total_pages_path

    @classmethod
    def options(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        return {"page_param": _param_name(spec, "page_param", spec.get("param", "page")),
                "start_page": _positive_int(spec, "start_page", 1, low=0) or 0, **_page_size(spec, "per_page"),
                "total_pages_path": spec.get("total_pages_path")}

    def start(self, request: PageRequest) -> None:
        request.params[self.page_param] = self.page
        if self.limit_param and self.limit:
            request.params[self.limit_param] = self.limit

    def advance(self, request, body, headers, row_count) -> bool:
        if row_count == 0 or self._no_more(body):
            return False
        if self.total_pages_path is not None:
            total = get_path(body, self.total_pages_path)
            # Total pages counts from 1 whatever the API's first page number is.
            if total is not None and self.page - self.start_page + 1 >= int(total):
                return False
        elif self.has_more_path is None and self.limit and row_count < self.limit:
            return False
        self.page += 1
        request.params[self.page_param] = self.page
        return True


def next_from_link_header(value: str | None, rel: str = "next") -> str | None:
    """The URL of the `rel` link in an RFC 8288 `Link` header (GitHub style)."""
    if not value:
        return None
    for match in _LINK.finditer(value):
        url, params = match.group(1), match.group(2)
        for param in params.split(";"):
            key, _, raw = param.strip().partition("=")
            if key.strip().lower() == "rel" and rel in raw.strip().strip('"').split():
                return url.strip()
    return None


class LinkPaginator(Paginator):
    """The next page's full URL, from the body (`next_url_path`) or the `Link` response header.

    The next URL replaces the request's URL and query (it carries its own). It must stay on the first
    request's scheme, host and port unless `allow_other_hosts`: a response must not be able to send the
    org's credential to another server.
    """

    type = "link"

    def __init__(self, next_url_path: str | None = None, rel: str = "next", allow_other_hosts: bool = False,
                 has_more_path: str | None = None):
        super().__init__(has_more_path)
        self.next_url_path = next_url_path
        self.rel = rel
        self.allow_other_hosts = allow_other_hosts
        self._origin: tuple[str, str, int | None] | None = None
        self._seen: set[str] = set()

    @classmethod
    def options(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        return {"next_url_path": spec.get("next_url_path") or spec.get("response_path"),
                "rel": str(spec.get("rel") or "next"), "allow_other_hosts": bool(spec.get("allow_other_hosts", False))}

    def start(self, request: PageRequest) -> None:
        self._origin = request.origin

    def advance(self, request, body, headers, row_count) -> bool:
        if self._no_more(body):
            return False
        if self.next_url_path:
            url = get_path(body, self.next_url_path)
        else:
            url = next_from_link_header(headers.get("Link") or headers.get("link"), self.rel)
        if not url or not isinstance(url, str):
            return False
        url = urljoin(request.url, url)
        parts = urlsplit(url)
        if not self.allow_other_hosts and (parts.scheme, (parts.hostname or "").lower(), parts.port) != self._origin:
            raise PermanentStepError(f"next-page link points to another host ({parts.hostname}); refused",
                                     code=ErrorCode.PROVIDER_BAD_RESPONSE)
        if url in self._seen:
            raise PermanentStepError("the API returned the same next-page link twice; stopping to avoid a loop",
                                     code=ErrorCode.PROVIDER_BAD_RESPONSE)
        self._seen.add(url)
        request.url = url
        request.params = {}
        return True


# `pagination.type` -> class; each class reads its own keys in `options`.
PAGINATORS: dict[str, type[Paginator]] = {
    cls.type: cls
    for cls in (SinglePagePaginator, CursorPaginator, OffsetPaginator, PageNumberPaginator, LinkPaginator)
}
PAGINATION_TYPES = tuple(PAGINATORS)


def build_paginator(spec: Mapping[str, Any] | None) -> Paginator:
    """The paginator for a step's `pagination:` block (absent: a single page)."""
    spec = dict(spec or {})
    kind = str(spec.get("type") or "none").lower()
    if kind not in PAGINATORS:
        raise invalid(f"pagination.type {kind!r} is not one of {', '.join(PAGINATION_TYPES)}")
    return PAGINATORS[kind].from_config(spec)
