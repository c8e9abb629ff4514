"""A generic REST API stand-in for `generic.api_extractor`: every pagination style, every auth type,
fault injection, and a request log the tests assert on.

Endpoints (all `GET`, same deterministic records `record(0..total-1)`):

| path                 | pagination                        | answer                                                 |
|----------------------|-----------------------------------|--------------------------------------------------------|
| `/v1/cursor/records` | `after` (opaque) + `limit`        | `{"data": [...], "meta": {"next_cursor", "has_more"}}` |
| `/v1/offset/records` | `offset` + `limit`                | `{"results": [...], "total": N}`                       |
| `/v1/page/records`   | `page` (from 1) + `per_page`      | `{"items": [...], "page": p, "total_pages": T}`        |
| `/v1/link/records`   | `page`, next URL in the body      | `{"data": [...], "links": {"next": url or null}}`      |
| `/v1/header/records` | `page`, next URL in `Link` header | `[...]` with `Link: <url>; rel="next"`                 |
| `/v1/single/records` | none                              | `{"data": [...first page_size records]}`               |

Records are generated per page, never held as a whole, so a million-row source costs no memory.
Auth (one expected credential per server): bearer, header (custom name), query (custom name), basic,
or none; a wrong or missing credential gets 401. Faults: `fail_at_page(n)` answers an error for page
n; `storm(k)` answers 429 with Retry-After to the next k requests; `limit_rate(rps)` answers 429 to any
request arriving sooner than 1/rps after the previous accepted one.

    python -m convergence.devstack.providers.rest_server --total 10000 --page-size 100 --auth bearer --secret tok
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from convergence.devstack.providers.common import LoopbackServer

PATHS = ("cursor", "offset", "page", "link", "header", "single")


@dataclass(frozen=True)
class ExpectedAuth:
    kind: str = "none"  # none | bearer | header | query | basic
    secret: str = ""
    name: str = ""  # header name (header) or query parameter (query)
    username: str = ""  # basic

    def check(self, request: web.Request) -> bool:
        if self.kind == "none":
            return True
        if self.kind == "bearer":
            return request.headers.get("Authorization") == f"Bearer {self.secret}"
        if self.kind == "header":
            return request.headers.get(self.name or "X-API-Key") == self.secret
        if self.kind == "query":
            return request.query.get(self.name or "api_key") == self.secret
        if self.kind == "basic":
            token = base64.b64encode(f"{self.username}:{self.secret}".encode()).decode()
            return request.headers.get("Authorization") == f"Basic {token}"
        raise ValueError(f"unknown auth kind {self.kind}")


@dataclass
class Hit:
    at: float  # time.monotonic()
    path: str
    query: dict[str, str]
    page: int | None
    status: int = 0
    authorized: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def record(index: int) -> dict[str, Any]:
    """Record `index`: nested objects and lists included, as real APIs return them."""
    return {
        "id": index,
        "name": f"record-{index:07d}",
        "email": f"user{index}@example.com",
        "amount": round(index * 0.01, 2),
        "active": index % 2 == 0,
        "created_at": f"2025-01-{1 + index % 28:02d}T{index % 24:02d}:00:00Z",
        "tags": ["alpha", "beta"][: 1 + index % 2],
        "attributes": {"tier": ("free", "pro", "enterprise")[index % 3], "region": "eu" if index % 2 else "us"},
    }


class RestStandIn(LoopbackServer):
    def __init__(self, total: int = 250, page_size: int = 100, auth: ExpectedAuth | None = None,
                 max_page_size: int = 5000, record_factory: Callable[[int], dict[str, Any]] = record,
                 host: str = "127.0.0.1", port: int = 0, keep_log: bool = True):
        super().__init__(host, port)
        self.total = total
        self.page_size = page_size
        self.max_page_size = max_page_size
        self.auth = auth or ExpectedAuth()
        self.record_factory = record_factory
        self.keep_log = keep_log
        self.hits: list[Hit] = []
        self.requests_served = 0
        self._fail_pages: dict[int, tuple[int, int]] = {}  # page -> (status, remaining)
        self._storm = 0
        self._storm_retry_after = "0.1"
        self._min_interval = 0.0
        self._rate_retry_after = "0.1"
        self._last_accepted = 0.0

    # -- faults ----------------------------------------------------------------------------------
    def fail_at_page(self, page: int, status: int = 500, times: int = 1_000_000) -> None:
        self._fail_pages[page] = (status, times)

    def storm(self, count: int, retry_after: float = 0.1) -> None:
        self._storm = count
        self._storm_retry_after = f"{retry_after:g}"

    def limit_rate(self, requests_per_second: float, retry_after: float = 0.1) -> None:
        self._min_interval = 1.0 / requests_per_second
        self._rate_retry_after = f"{retry_after:g}"

    # -- helpers ---------------------------------------------------------------------------------
    def calls(self, status: int | None = None) -> list[Hit]:
        return [h for h in self.hits if status is None or h.status == status]

    def _size(self, request: web.Request, name: str) -> int:
        raw = request.query.get(name)
        if raw is None:
            return self.page_size
        size = int(raw)
        if not 1 <= size <= self.max_page_size:
            raise web.HTTPBadRequest(text=f'{{"error": "{name} must be 1..{self.max_page_size}"}}',
                                     content_type="application/json")
        return size

    def _rows(self, start: int, size: int) -> list[dict[str, Any]]:
        return [self.record_factory(i) for i in range(start, min(start + size, self.total))]

    def _url(self, request: web.Request, **params: Any) -> str:
        return str(request.url.with_query({**{k: v for k, v in request.query.items() if k != "api_key"}, **params}))

    @staticmethod
    def _page_of(request: web.Request, size: int) -> int | None:
        kind = request.path.split("/")[2] if request.path.count("/") >= 3 else ""
        query = request.query
        try:
            if kind == "cursor":
                after = query.get("after")
                return 1 + (_decode(after) // size if after else 0)
            if kind == "offset":
                return 1 + int(query.get("offset", "0")) // size
            if kind in ("page", "link", "header"):
                return int(query.get("page", "1"))
            if kind == "single":
                return 1
        except ValueError:
            return None
        return None

    # -- the app ---------------------------------------------------------------------------------
    @web.middleware
    async def _gate(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        self.requests_served += 1
        size_name = {"cursor": "limit", "offset": "limit", "page": "per_page"}.get(
            request.path.split("/")[2] if request.path.count("/") >= 3 else "", "per_page")
        try:
            size = self._size(request, size_name)
        except web.HTTPBadRequest:
            size = self.page_size
        hit = Hit(time.monotonic(), request.path, dict(request.query), self._page_of(request, size),
                  headers={k: v for k, v in request.headers.items() if k.lower() in ("user-agent", "accept")})
        if self.keep_log:
            self.hits.append(hit)
        if not self.auth.check(request):
            hit.status = 401
            return web.json_response({"error": {"message": "invalid credentials", "type": "unauthorized"}},
                                     status=401)
        hit.authorized = True
        if self._storm > 0:
            self._storm -= 1
            hit.status = 429
            return web.json_response({"error": "rate limited"}, status=429,
                                     headers={"Retry-After": self._storm_retry_after})
        if self._min_interval:
            now = time.monotonic()
            if now - self._last_accepted < self._min_interval * 0.9:  # 10% leeway for timer jitter
                hit.status = 429
                return web.json_response({"error": "too many requests"}, status=429,
                                         headers={"Retry-After": self._rate_retry_after})
            self._last_accepted = now
        failure = self._fail_pages.get(hit.page) if hit.page is not None else None
        if failure is not None and failure[1] > 0:
            self._fail_pages[hit.page] = (failure[0], failure[1] - 1)  # type: ignore[index]
            hit.status = failure[0]
            return web.json_response({"error": f"injected failure at page {hit.page}"}, status=failure[0])
        try:
            response = await handler(request)
        except web.HTTPException as error:
            hit.status = error.status
            raise
        hit.status = response.status
        return response

    def app(self) -> web.Application:
        application = web.Application(middlewares=[self._gate])
        application.add_routes([
            web.get("/v1/cursor/records", self._cursor), web.get("/v1/offset/records", self._offset),
            web.get("/v1/page/records", self._page), web.get("/v1/link/records", self._link),
            web.get("/v1/header/records", self._header), web.get("/v1/single/records", self._single),
        ])
        return application

    async def _cursor(self, request: web.Request) -> web.Response:
        size = self._size(request, "limit")
        after = request.query.get("after")
        start = _decode(after) if after else 0
        rows = self._rows(start, size)
        more = start + size < self.total
        return web.json_response({"data": rows, "meta": {"next_cursor": _encode(start + size) if more else None,
                                                         "has_more": more}})

    async def _offset(self, request: web.Request) -> web.Response:
        size = self._size(request, "limit")
        start = int(request.query.get("offset", "0"))
        return web.json_response({"results": self._rows(start, size), "total": self.total})

    async def _page(self, request: web.Request) -> web.Response:
        size = self._size(request, "per_page")
        page = int(request.query.get("page", "1"))
        pages = max(1, -(-self.total // size))
        return web.json_response({"items": self._rows((page - 1) * size, size), "page": page, "total_pages": pages})

    async def _link(self, request: web.Request) -> web.Response:
        size = self.page_size
        page = int(request.query.get("page", "1"))
        more = page * size < self.total
        nxt = self._url(request, page=page + 1) if more else None
        # Relative links are allowed by RFC 3986; alternate absolute and relative to test both.
        if nxt and page % 2 == 0:
            nxt = nxt.split(f"{self.host}:{self.port}", 1)[1]
        return web.json_response({"data": self._rows((page - 1) * size, size), "links": {"next": nxt}})

    async def _header(self, request: web.Request) -> web.Response:
        size = self.page_size
        page = int(request.query.get("page", "1"))
        last = max(1, -(-self.total // size))
        links = [f'<{self._url(request, page=1)}>; rel="first"', f'<{self._url(request, page=last)}>; rel="last"']
        if page < last:
            links.insert(0, f'<{self._url(request, page=page + 1)}>; rel="next"')
        return web.json_response(self._rows((page - 1) * size, size), headers={"Link": ", ".join(links)})

    async def _single(self, request: web.Request) -> web.Response:
        return web.json_response({"data": self._rows(0, self.page_size)})


def _encode(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _decode(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text='{"error": "bad cursor"}', content_type="application/json") from None
    if not text.startswith("o:"):
        raise web.HTTPBadRequest(text='{"error": "bad cursor"}', content_type="application/json")
    return int(text[2:])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m convergence.devstack.providers.rest_server")
    parser.add_argument("--total", type=int, default=1000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--auth", default="none", choices=["none", "bearer", "header", "query", "basic"])
    parser.add_argument("--secret", default="")
    parser.add_argument("--name", default="")
    parser.add_argument("--username", default="")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = RestStandIn(args.total, args.page_size, ExpectedAuth(args.auth, args.secret, args.name, args.username),
                         port=args.port, keep_log=False)

    async def serve() -> None:
        print(await server.start(), flush=True)  # noqa: T201 - the caller reads the address
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
