"""Machinery shared by the provider stand-ins: usage data, time buckets, cursors, fault injection, serving.

Usage is held (or generated) per UTC hour; a server sums the hours that fall in each requested bucket,
so daily, hourly and minute answers always agree with each other and with the billed costs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Self

from aiohttp import web

from convergence.devstack.providers.paging import BadRequest

WIDTH_SECONDS = {"1m": 60, "1h": 3600, "1d": 86400}
HOUR = 3600


def to_epoch(value: datetime | date | str | int) -> int:
    """Unix seconds of a datetime (naive = UTC), a date (its UTC midnight), an ISO string or an int."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00")) if "T" in value else date.fromisoformat(value)
    if isinstance(value, datetime):
        return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())
    return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp())


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_of(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).date().isoformat()


@dataclass(eq=False)
class UsageRecord:
    """Usage of one combination of dimensions during one UTC hour (`hour` = its start, Unix seconds)."""

    hour: int
    dims: dict[str, Any]
    metrics: dict[str, int]

    @classmethod
    def at(cls, when: datetime | date | str | int, dims: Mapping[str, Any], **metrics: int) -> UsageRecord:
        start = to_epoch(when)
        return cls(start - start % HOUR, dict(dims), dict(metrics))


class UsageSource:
    """Where a server's usage comes from: `records(start, end)` yields the records of hours in [start, end)."""

    def records(self, start: int, end: int) -> Iterator[UsageRecord]:
        raise NotImplementedError


class FixedUsage(UsageSource):
    """A given list of records (tests compute their expectation from the same list)."""

    def __init__(self, records: Iterable[UsageRecord]):
        self._records = sorted(records, key=lambda r: r.hour)
        self._hours = [r.hour for r in self._records]

    def records(self, start: int, end: int) -> Iterator[UsageRecord]:
        index = bisect_left(self._hours, start)
        while index < len(self._records) and self._records[index].hour < end:
            yield self._records[index]
            index += 1

    def add(self, record: UsageRecord) -> None:
        self.__init__([*self._records, record])  # type: ignore[misc]


def usage_source(value: UsageSource | Iterable[UsageRecord] | None, default: Callable[[], UsageSource]) -> UsageSource:
    """A server's usage as its caller gave it, a source or a list of records; `default()` when not given."""
    if value is None:
        return default()
    return value if isinstance(value, UsageSource) else FixedUsage(value)


MetricsFn = Callable[[int, Mapping[str, Any]], dict[str, int]]


class GeneratedUsage(UsageSource):
    """Deterministic usage from a seed: for each hour and each combination of dimensions, a hash decides
    whether there was usage (with probability `density`) and how much. Same seed, same numbers, always."""

    def __init__(self, seed: int, combos: Sequence[Mapping[str, Any]], metrics: MetricsFn,
                 density: float = 0.6, first_day: date | None = None, last_day: date | None = None):
        self.seed = seed
        self.combos = [dict(c) for c in combos]
        self.metrics = metrics
        self.density = density
        self.first = to_epoch(first_day) if first_day else None
        self.last = to_epoch(last_day) + 86400 if last_day else None

    def _hash(self, hour: int, index: int) -> int:
        digest = hashlib.blake2b(f"{self.seed}|{hour}|{index}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")

    def records(self, start: int, end: int) -> Iterator[UsageRecord]:
        hour = start - start % HOUR
        if hour < start:
            hour += HOUR
        if self.first is not None:
            hour = max(hour, self.first)
        if self.last is not None:
            end = min(end, self.last)
        threshold = int(self.density * 10_000)
        while hour < end:
            for index, combo in enumerate(self.combos):
                value = self._hash(hour, index)
                if value % 10_000 < threshold:
                    yield UsageRecord(hour, combo, self.metrics(value // 10_000, combo))
            hour += HOUR


def aggregate(records: Iterable[UsageRecord], group_by: Sequence[str], dimensions: Sequence[str],
              filters: Mapping[str, set[Any]] | None = None) -> list[tuple[dict[str, Any], dict[str, int]]]:
    """Sum metrics per combination of the grouped dimensions; the others come out as null, like the APIs."""
    groups: dict[tuple, dict[str, int]] = {}
    for record in records:
        if filters and any(record.dims.get(k) not in allowed for k, allowed in filters.items()):
            continue
        key = tuple(record.dims.get(g) for g in group_by)
        sums = groups.setdefault(key, {})
        for name, value in record.metrics.items():
            sums[name] = sums.get(name, 0) + value
    out = []
    for key in sorted(groups, key=lambda k: tuple("" if v is None else str(v) for v in k)):
        dims = {d: None for d in dimensions}
        dims.update(zip(group_by, key, strict=True))
        out.append((dims, groups[key]))
    return out


def encode_cursor(text: str) -> str:
    """Opaque page cursors shaped like the providers' (`page_` + base64)."""
    return "page_" + base64.b64encode(text.encode()).decode()


def decode_cursor(cursor: str) -> str | None:
    if not cursor.startswith("page_"):
        return None
    try:
        return base64.b64decode(cursor[5:], validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass
class Fault:
    """An injected failure. Matching requests (by exact path, or any when None) first pass `skip` times,
    then the next `times` get `status` (with `Retry-After` when set), or a malformed 200 page."""

    status: int = 500
    path: str | None = None
    skip: int = 0
    times: int = 1
    retry_after: str | None = None
    malformed: bool = False
    body: Any = None
    fired: int = 0


@dataclass
class RequestLog:
    method: str
    path: str
    query: list[tuple[str, str]]
    authorized: bool
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # selected non-secret headers only

    def params(self, name: str) -> list[str]:
        return [v for k, v in self.query if k == name]


class LoopbackServer:
    """An aiohttp app on 127.0.0.1, started in the caller's loop or in a thread of its own (synchronous
    callers, benchmarks). Subclasses say what the app is."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> str:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._thread_loop = loop
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=serve, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self.base_url

    def stop_thread(self) -> None:
        if self._thread_loop is not None and self._thread is not None:
            self._thread_loop.call_soon_threadsafe(self._thread_loop.stop)
            self._thread.join(10)
            self._thread = self._thread_loop = None


class StandInServer(LoopbackServer):
    """A provider stand-in: fault injection and a request log (which never holds keys)."""

    logged_headers: tuple[str, ...] = ("user-agent",)

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.faults: list[Fault] = []
        self.requests: list[RequestLog] = []

    # -- provider specifics -----------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def authorized(self, request: web.Request) -> web.Response | None:
        """None when the request may go on; otherwise the provider's own error answer."""
        raise NotImplementedError

    def error(self, status: int, message: str, kind: str | None = None) -> web.Response:
        raise NotImplementedError

    def malformed_page(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- faults ------------------------------------------------------------------------------
    def inject(self, status: int = 500, *, path: str | None = None, skip: int = 0, times: int = 1,
               retry_after: str | int | None = None, malformed: bool = False, body: Any = None) -> Fault:
        fault = Fault(status=status, path=path, skip=skip, times=times,
                      retry_after=None if retry_after is None else str(retry_after), malformed=malformed, body=body)
        self.faults.append(fault)
        return fault

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.path is not None and fault.path != path:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            if fault.fired < fault.times:
                fault.fired += 1
                return fault
        return None

    def calls(self, path: str | None = None, status: int | None = None) -> list[RequestLog]:
        return [r for r in self.requests if (path is None or r.path == path) and (status is None or r.status == status)]

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        entry = RequestLog(request.method, request.path, list(request.query.items()), authorized=False,
                           headers={h: request.headers[h] for h in self.logged_headers if h in request.headers})
        self.requests.append(entry)
        denied = self.authorized(request)
        if denied is not None:
            entry.status = denied.status
            return denied
        entry.authorized = True
        fault = self._take_fault(request.path)
        if fault is not None:
            if fault.malformed:
                entry.status = 200
                return web.json_response(self.malformed_page())
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            response = (web.json_response(fault.body, status=fault.status, headers=headers)
                        if fault.body is not None else self.error(fault.status, _reason(fault.status)))
            response.headers.update(headers)
            entry.status = fault.status
            return response
        try:
            response = await handler(request)
        except BadRequest as bad:
            response = bad.response
        except web.HTTPException as http_error:
            entry.status = http_error.status
            raise
        entry.status = response.status
        return response


    def app(self) -> web.Application:
        application = web.Application(middlewares=[self._middleware])
        application.add_routes(self.routes())
        return application


def _reason(status: int) -> str:
    return {429: "Rate limit exceeded. Please retry after the indicated time.", 500: "Internal server error",
            502: "Bad gateway", 503: "Service unavailable", 529: "Overloaded"}.get(status, f"HTTP {status}")


def query_list(request: web.Request, name: str) -> list[str]:
    """Array query parameters in either form: repeated `name=a&name=b` or brackets `name[]=a`."""
    return list(request.query.getall(name, [])) + list(request.query.getall(f"{name}[]", []))


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


def run_forever(server: StandInServer) -> None:
    """`python -m convergence.devstack.providers.X_server`: serve until interrupted, printing the base URL."""

    async def main() -> None:
        url = await server.start()
        print(url, flush=True)  # noqa: T201 - the caller reads the address from stdout
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
