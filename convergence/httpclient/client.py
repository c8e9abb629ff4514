"""A JSON HTTP client for provider APIs: retries 429/5xx/network errors with exponential backoff that
honours Retry-After, maps the final answer to a transient or permanent step error, never logs secrets."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
import yarl
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from convergence.httpclient.ssrf import AddressGuard, BlockedAddress, is_guarded
from convergence.pipeline.errors import ErrorCode, PermanentStepError, TransientStepError

log = structlog.get_logger(__name__)
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    # Retry-After beyond this is not waited for: the run fails transiently and Pub/Sub retries later.
    max_retry_after_seconds: float = 60.0


class HttpError(Exception):
    """A non-2xx answer. `retryable` when another try may succeed."""

    def __init__(self, status: int, url: str, body: str, retry_after: float | None):
        self.status = status
        self.url = url
        self.body = body[:500]
        self.retry_after = retry_after
        super().__init__(f"HTTP {status} from {url}: {self.body}")

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUS


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class _WaitHonouringRetryAfter:
    def __init__(self, policy: RetryPolicy):
        self.backoff = wait_exponential_jitter(multiplier=policy.initial_seconds, max=policy.max_seconds)
        self.policy = policy

    def __call__(self, retry_state) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, HttpError) and error.retry_after is not None:
            return min(error.retry_after, self.policy.max_retry_after_seconds)
        return self.backoff(retry_state)


def _retryable(error: BaseException) -> bool:
    if isinstance(error, HttpError):
        return error.retryable and (error.retry_after is None or error.retry_after <= 60)
    return isinstance(error, aiohttp.ClientConnectionError | aiohttp.ServerTimeoutError | asyncio.TimeoutError)


class HttpClient:
    """Wraps one aiohttp session. `provider` names the API in error messages."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        provider: str,
        guard: AddressGuard | None = None,
        policy: RetryPolicy | None = None,
        rate_per_second: float | None = None,
        on_response: Any = None,
    ):
        self.session = session
        self.provider = provider
        self.guard = guard or AddressGuard(enabled=False)
        if self.guard.enabled and not is_guarded(session):
            # Without the guarded resolver a name is checked here and resolved again by aiohttp (rebinding).
            raise ValueError("an enabled AddressGuard needs a session made by AddressGuard.session()")
        self.policy = policy or RetryPolicy()
        self.min_interval = 1.0 / rate_per_second if rate_per_second else 0.0
        self._last_call = 0.0
        self._rate_lock = asyncio.Lock()
        self.on_response = on_response  # metrics hook: (provider, status) -> None
        self.calls = 0

    async def _throttle(self) -> None:
        if not self.min_interval:
            return
        async with self._rate_lock:
            wait = self._last_call + self.min_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_call = time.monotonic()

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | list | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        auth: aiohttp.BasicAuth | None = None,
    ) -> tuple[Any, Mapping[str, str]]:
        """Returns (decoded JSON body, response headers); raises a step error after the retries."""
        self.guard.check_url(url)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.policy.attempts),
                wait=_WaitHonouringRetryAfter(self.policy),
                retry=retry_if_exception(_retryable),
                reraise=True,
            ):
                with attempt:
                    return await self._once(method, url, params, headers, json, auth)
        except HttpError as error:
            raise self._step_error(error) from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise TransientStepError(
                f"{self.provider}: network error calling {_no_query(url)}: {type(error).__name__}: {error}",
                code=ErrorCode.PROVIDER_NETWORK_ERROR,
            ) from None
        raise AssertionError("unreachable")

    async def _once(self, method, url, params, headers, json, auth):
        await self._throttle()
        async with self._send(method, url, params, headers, json, auth) as response:
            if self.on_response is not None:
                self.on_response(self.provider, response.status)
            if response.status >= 400:
                body = await response.text()
                raise HttpError(
                    response.status,
                    _no_query(str(response.url)),
                    body,
                    parse_retry_after(response.headers.get("Retry-After")),
                )
            if response.status in REDIRECT_STATUS:
                raise PermanentStepError(f"{self.provider}: HTTP {response.status} from {_no_query(url)} "
                                         "without a Location", code=ErrorCode.PROVIDER_BAD_RESPONSE)
            if response.status == 204:
                return None, response.headers
            try:
                return await response.json(content_type=None), response.headers
            except ValueError as error:
                raise PermanentStepError(
                    f"{self.provider}: response from {_no_query(url)} is not JSON: {error}",
                    code=ErrorCode.PROVIDER_BAD_RESPONSE,
                ) from None

    @contextlib.asynccontextmanager
    async def _send(self, method, url, params, headers, json, auth):
        """Sends without aiohttp's redirect handling and follows up to MAX_REDIRECTS hops itself, each
        Location through the guard. Credentials (auth, every caller header) are not sent to another origin."""
        origin, previous = _origin(url), url
        for hop in range(MAX_REDIRECTS + 1):
            self.calls += 1
            try:
                response = await self.session.request(method, url, params=params, headers=headers, json=json,
                                                      auth=auth, allow_redirects=False)
            except BlockedAddress as error:  # refused by the connector's resolver
                where = f"redirect from {_no_query(previous)} to {_no_query(url)}" if hop else _no_query(url)
                raise BlockedAddress(f"{self.provider}: {where} refused: {error}") from None
            location = response.headers.get("Location")
            if response.status in REDIRECT_STATUS and location and hop == MAX_REDIRECTS:
                response.release()
                raise PermanentStepError(f"{self.provider}: more than {MAX_REDIRECTS} redirects from "
                                         f"{_no_query(url)}; refused", code=ErrorCode.PROVIDER_TOO_MANY_REDIRECTS)
            if response.status not in REDIRECT_STATUS or not location:
                try:
                    yield response
                finally:
                    response.release()
                return
            response.release()
            try:
                target = str(response.url.join(yarl.URL(location)))
            except ValueError:
                raise PermanentStepError(f"{self.provider}: redirect from {_no_query(url)} has an invalid "
                                         "Location", code=ErrorCode.PROVIDER_BAD_RESPONSE) from None
            try:
                self.guard.check_url(target)
            except BlockedAddress as error:
                raise BlockedAddress(f"{self.provider}: redirect from {_no_query(url)} to {_no_query(target)} "
                                     f"refused: {error}") from None
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, json = "GET", None
            if _origin(target) != origin:
                if json is not None:
                    raise PermanentStepError(f"{self.provider}: redirect of a request body to another host "
                                             f"({_no_query(target)}) refused", code=ErrorCode.PROVIDER_BAD_RESPONSE)
                headers = {k: v for k, v in (headers or {}).items() if k.lower() in _SAFE_HEADERS}
                auth = None
            previous, url, params = url, target, None  # the Location holds the whole next URL, query included

    def _step_error(self, error: HttpError):
        where = f"{self.provider} answered HTTP {error.status} for {error.url}"
        if error.status in (401, 403):
            return PermanentStepError(
                f"{where}: credentials rejected ({error.body})",
                code=ErrorCode.PROVIDER_AUTH_FAILED, status=error.status
            )
        if error.status == 429:
            return TransientStepError(
                f"{where}: rate limited after {self.policy.attempts} attempts",
                code=ErrorCode.PROVIDER_RATE_LIMITED, status=429
            )
        if error.retryable:
            return TransientStepError(f"{where}: {error.body}",
                                      code=ErrorCode.PROVIDER_UNAVAILABLE, status=error.status)
        return PermanentStepError(f"{where}: {error.body}",
                                  code=ErrorCode.PROVIDER_REQUEST_REJECTED, status=error.status)


_SAFE_HEADERS = frozenset({"accept", "accept-encoding", "user-agent"})


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


def _no_query(url: str) -> str:
    """URLs in errors drop their query string: some APIs take keys as query parameters."""
    return url.split("?", 1)[0]
