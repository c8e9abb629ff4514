"""OIDC verification of Pub/Sub push requests.

Pub/Sub signs each push with a Google ID token (`Authorization: Bearer <jwt>`) for the service account
and audience set on the push subscription. We check, with google-auth's `verify_token`: signature
against Google's certs, `exp`/`iat`, `aud`; then ourselves: `iss` is accounts.google.com, `email` is
the configured service account and `email_verified` is true. (`verify_token` with `audience=None`
skips the audience check, so an audience is mandatory here.)

The certs are fetched asynchronously and cached for their `Cache-Control: max-age`; google-auth then
reads them through an in-memory transport, so verification never blocks the event loop on I/O.
Tokens are never logged, and no google-auth error text is passed on: some of it embeds the token.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
import structlog
from google.auth import jwt, transport
from google.auth.exceptions import TransportError
from google.oauth2 import id_token

from convergence.httpclient import AddressGuard, BlockedAddress

log = structlog.get_logger(__name__)

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
# Google ID tokens are ~1 KB; anything far bigger is not one and is not worth parsing.
MAX_TOKEN_CHARS = 8192
_MAX_AGE = re.compile(r"max-age=(\d+)")


class AuthFailure(StrEnum):
    MISSING_HEADER = "missing_authorization"
    NOT_BEARER = "not_bearer"
    MALFORMED = "malformed_token"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_EMAIL = "wrong_email"
    EMAIL_NOT_VERIFIED = "email_not_verified"
    INVALID = "invalid_token"
    CERTS_UNAVAILABLE = "certs_unavailable"

    @property
    def http_status(self) -> int:
        """401: no valid token. 403: a valid Google token, but not our push identity.

        503 when the certs cannot be fetched: our problem, retryable (push nacks every non-2xx anyway,
        but 4xx must never mean "retry").
        """
        if self in (AuthFailure.WRONG_EMAIL, AuthFailure.EMAIL_NOT_VERIFIED):
            return 403
        if self is AuthFailure.CERTS_UNAVAILABLE:
            return 503
        return 401


class PushAuthError(Exception):
    """A push request is refused. `detail` is safe to log and to return: it never holds the token."""

    def __init__(self, failure: AuthFailure, detail: str) -> None:
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.detail = detail

    @property
    def http_status(self) -> int:
        return self.failure.http_status


@dataclass(frozen=True)
class PushIdentity:
    """The verified caller: safe to log."""

    email: str
    subject: str | None
    audience: str
    expires_at: int


class CertsUnavailable(Exception):
    pass


@dataclass(frozen=True)
class CertsSnapshot:
    body: bytes
    kids: frozenset[str]
    fetched_at: float
    expires_at: float


class CertsCache:
    """Fetches the `{kid: PEM}` certs document and keeps it for its max-age (one fetch at a time).

    A token whose `kid` is not in a fresh document triggers one early refetch (key rotation), at most
    every `min_refresh_interval` seconds so random kids cannot make us hammer the certs endpoint. If a
    refetch fails, the last good document keeps being used: Google publishes keys long before use.
    """

    def __init__(self, url: str, *, default_ttl: float = 300.0, max_ttl: float = 86_400.0,
                 min_refresh_interval: float = 30.0, fetch_timeout: float = 5.0,
                 guard: AddressGuard | None = None) -> None:
        self.url = url
        # The outbound guard every provider call goes through: in production the certs URL, a setting, must
        # be https and must not reach a private or metadata address.
        self.guard = guard or AddressGuard(enabled=False)
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.min_refresh_interval = min_refresh_interval
        self.fetch_timeout = fetch_timeout
        self.fetches = 0
        self._snapshot: CertsSnapshot | None = None
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = self.guard.session(timeout=aiohttp.ClientTimeout(total=self.fetch_timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, kid: str | None = None) -> CertsSnapshot:
        snapshot = self._snapshot
        if snapshot is not None and not self._needs_refresh(snapshot, kid):
            return snapshot
        async with self._lock:  # single flight: concurrent requests share one fetch
            snapshot = self._snapshot
            if snapshot is not None and not self._needs_refresh(snapshot, kid):
                return snapshot
            return await self._refresh()

    def _needs_refresh(self, snapshot: CertsSnapshot, kid: str | None) -> bool:
        now = time.monotonic()
        recently_tried = now - self._last_attempt < self.min_refresh_interval
        if now >= snapshot.expires_at:
            # Expired: refetch, unless a refetch just failed (then the stale copy serves a while longer).
            return not (recently_tried and self._last_attempt > snapshot.fetched_at)
        return kid is not None and kid not in snapshot.kids and not recently_tried

    async def _refresh(self) -> CertsSnapshot:
        self._last_attempt = time.monotonic()
        try:
            snapshot = await self._fetch()
        except CertsUnavailable as error:
            if self._snapshot is None:
                raise
            log.warning("oidc certs refetch failed; using the cached certs", error=str(error))
            return self._snapshot
        self._snapshot = snapshot
        return snapshot

    async def _fetch(self) -> CertsSnapshot:
        await self.start()
        assert self._session is not None
        self.fetches += 1
        try:
            self.guard.check_url(self.url)
            async with self._session.get(self.url) as response:
                body = await response.read()
                if response.status != 200:
                    raise CertsUnavailable(f"certs endpoint answered HTTP {response.status}")
                ttl = self._ttl(response.headers)
        except BlockedAddress as error:
            raise CertsUnavailable(f"certs URL refused: {error}") from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise CertsUnavailable(f"cannot fetch certs: {type(error).__name__}: {error}") from None
        kids = _parse_certs(body)
        now = time.monotonic()
        log.info("oidc certs fetched", keys=len(kids), ttl_seconds=round(ttl))
        return CertsSnapshot(body=body, kids=kids, fetched_at=now, expires_at=now + ttl)

    def _ttl(self, headers: Mapping[str, str]) -> float:
        match = _MAX_AGE.search(headers.get("Cache-Control", ""))
        if match is None:
            return self.default_ttl
        age = int(headers.get("Age", "0")) if headers.get("Age", "").isdigit() else 0
        return float(min(max(int(match.group(1)) - age, 0), self.max_ttl))


def _parse_certs(body: bytes) -> frozenset[str]:
    try:
        document = json.loads(body)
    except ValueError:
        raise CertsUnavailable("certs document is not JSON") from None
    if isinstance(document, dict) and "keys" in document:
        # JWKS (the v3 endpoint) needs pyjwt, which is not a dependency: use the v1 {kid: PEM} URL.
        raise CertsUnavailable("certs document is a JWK set; push_certs_url must serve {kid: PEM}")
    if not isinstance(document, dict) or not document or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in document.items()
    ):
        raise CertsUnavailable("certs document is not a non-empty {kid: PEM} object")
    return frozenset(document)


class _Response(transport.Response):
    def __init__(self, body: bytes) -> None:
        self._body = body

    @property
    def status(self) -> int:
        return 200

    @property
    def headers(self) -> Mapping[str, str]:
        return {}

    @property
    def data(self) -> bytes:
        return self._body


class _CachedCertsRequest(transport.Request):
    """google-auth transport that answers the certs GET from memory (the fetch already happened)."""

    def __init__(self, url: str, body: bytes) -> None:
        self._url = url
        self._body = body

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: Any = None, **kwargs: Any) -> transport.Response:
        if url != self._url or method != "GET":
            raise TransportError(f"unexpected request {method} {url}")
        return _Response(self._body)


class PushTokenVerifier:
    """Checks the `Authorization` header of a push request; returns the identity or raises PushAuthError."""

    def __init__(self, audience: str, service_account_email: str, certs_url: str = GOOGLE_CERTS_URL, *,
                 clock_skew_seconds: int = 10, certs: CertsCache | None = None,
                 guard: AddressGuard | None = None) -> None:
        if not audience:
            raise ValueError("an audience is required: without one google-auth does not check `aud`")
        if not service_account_email:
            raise ValueError("the push service account email is required")
        self.audience = audience
        self.service_account_email = service_account_email
        self.certs_url = certs_url
        self.clock_skew_seconds = clock_skew_seconds
        self.certs = certs or CertsCache(certs_url, guard=guard)

    async def start(self) -> None:
        """Open the certs session and fetch the certs once, so a bad certs URL shows at boot."""
        await self.certs.start()
        try:
            await self.certs.get()
        except CertsUnavailable as error:  # not fatal: requests retry the fetch (and nack meanwhile)
            log.warning("oidc certs not available at startup", certs_url=self.certs_url, error=str(error))

    async def close(self) -> None:
        await self.certs.close()

    async def verify(self, authorization: str | None) -> PushIdentity:
        token = _bearer_token(authorization)
        kid = _key_id(token)
        try:
            snapshot = await self.certs.get(kid)
        except CertsUnavailable as error:
            raise PushAuthError(AuthFailure.CERTS_UNAVAILABLE, str(error)) from None
        if kid is not None and kid not in snapshot.kids:
            raise PushAuthError(AuthFailure.UNKNOWN_KEY, "token signed with a key that is not in the certs")
        claims = self._verify_signature_and_times(token, snapshot)
        return self._check_identity(claims)

    def _verify_signature_and_times(self, token: str, snapshot: CertsSnapshot) -> Mapping[str, Any]:
        try:
            return id_token.verify_token(
                token, _CachedCertsRequest(self.certs_url, snapshot.body), audience=self.audience,
                certs_url=self.certs_url, clock_skew_in_seconds=self.clock_skew_seconds,
            )
        except Exception as error:  # noqa: BLE001 - any failure to verify is a refusal
            raise PushAuthError(*_classify(error)) from None

    def _check_identity(self, claims: Mapping[str, Any]) -> PushIdentity:
        if claims.get("iss") not in GOOGLE_ISSUERS:
            issuer = str(claims.get("iss"))[:100]
            raise PushAuthError(AuthFailure.WRONG_ISSUER, f"issuer {issuer!r} is not Google")
        email = claims.get("email")
        if email != self.service_account_email:
            raise PushAuthError(AuthFailure.WRONG_EMAIL,
                                f"token email {str(email)[:200]!r} is not the push service account")
        if claims.get("email_verified") not in (True, "true"):
            raise PushAuthError(AuthFailure.EMAIL_NOT_VERIFIED, "token email is not verified")
        return PushIdentity(email=email, subject=claims.get("sub"), audience=self.audience,
                            expires_at=int(claims.get("exp", 0)))


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise PushAuthError(AuthFailure.MISSING_HEADER, "no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise PushAuthError(AuthFailure.NOT_BEARER, "Authorization is not a Bearer token")
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise PushAuthError(AuthFailure.MALFORMED, "token too long")
    return token


def _key_id(token: str) -> str | None:
    try:
        header = jwt.decode_header(token)
    except Exception:  # noqa: BLE001 - google-auth's messages embed the token: say nothing more
        raise PushAuthError(AuthFailure.MALFORMED, "token is not a JWT") from None
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


# google-auth raises the same exception types for different checks; only the message tells them apart.
# A message that changes in a google-auth upgrade only degrades the reason to INVALID (still 401):
# tests/unit/consumer/test_oidc.py pins each reason.
_MESSAGES = (
    ("token expired", AuthFailure.EXPIRED, "token expired"),
    ("used too early", AuthFailure.NOT_YET_VALID, "token not valid yet (iat in the future)"),
    ("wrong audience", AuthFailure.WRONG_AUDIENCE, "token audience is not this endpoint"),
    ("could not verify token signature", AuthFailure.BAD_SIGNATURE, "bad token signature"),
    ("certificate for key id", AuthFailure.UNKNOWN_KEY, "token signed with an unknown key"),
    ("does not contain required claim", AuthFailure.MALFORMED, "token lacks iat or exp"),
)


def _classify(error: Exception) -> tuple[AuthFailure, str]:
    text = str(error).lower()
    for needle, failure, detail in _MESSAGES:
        if needle in text:
            return failure, detail
    return AuthFailure.INVALID, f"token rejected ({type(error).__name__})"
