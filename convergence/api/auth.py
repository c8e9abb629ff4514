"""Keys of the HTTP door: org API keys (`X-API-Key`) and the CA root key (`X-CA-Root-Key`).

Org keys: the key names its org (`{org_slug}_api_{16 chars}`); it must be an active, unexpired key of
that org: tenancy.api_keys hashes it (SHA256) and compares the hash with the org's stored hashes in
constant time. A verified key is remembered (by its hash, never the key) for `api_key_cache_seconds`,
so a burst of calls costs one BigQuery query; a revoked key keeps working at most that long here.
Failures are never cached.

Root key: SHA256 of both sides compared with hmac.compare_digest (constant time whatever the
lengths).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convergence.api.errors import ApiErrorCode
from convergence.settings import Settings
from convergence.tenancy.api_keys import hash_api_key, org_slug_from_api_key


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class OrgKey:
    org_slug: str
    fingerprint: str  # last 4 characters, as stored at issue time: safe to log


Verify = Callable[[str, str], bool]  # (org_slug, api_key) -> active key of that org?


class OrgKeyAuth:
    def __init__(self, verify: Verify, cache_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 max_cached: int = 10_000):
        self.verify = verify
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.max_cached = max_cached
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.lookups = 0  # BigQuery verifications made (tests, metrics)

    async def authenticate(self, api_key: str | None, org_slug: str | None = None) -> OrgKey:
        """The key's org, verified. With `org_slug`, the key must belong to that org (else 403)."""
        if not api_key:
            raise AuthError(401, ApiErrorCode.API_KEY_MISSING, "X-API-Key header is required")
        claimed = org_slug_from_api_key(api_key)
        if claimed is None:
            raise AuthError(401, ApiErrorCode.API_KEY_INVALID, "invalid API key")
        if org_slug is not None and not hmac.compare_digest(claimed.encode(), org_slug.encode()):
            raise AuthError(403, ApiErrorCode.API_KEY_WRONG_ORG, f"this API key does not belong to org {org_slug}")
        digest = hash_api_key(api_key)
        if not self._cached(digest, claimed):
            self.lookups += 1
            if not await asyncio.to_thread(self.verify, claimed, api_key):
                raise AuthError(401, ApiErrorCode.API_KEY_INVALID, "invalid, revoked or expired API key")
            self._remember(digest, claimed)
        return OrgKey(claimed, api_key[-4:])

    def _cached(self, digest: str, org_slug: str) -> bool:
        if self.cache_seconds <= 0:
            return False
        with self._lock:
            entry = self._cache.get(digest)
            if entry is None:
                return False
            if entry[1] <= self.clock():
                del self._cache[digest]
                return False
            return entry[0] == org_slug

    def _remember(self, digest: str, org_slug: str) -> None:
        if self.cache_seconds <= 0:
            return
        now = self.clock()
        with self._lock:
            if len(self._cache) >= self.max_cached:
                for key in [k for k, (_, expiry) in self._cache.items() if expiry <= now] or list(self._cache)[:1]:
                    del self._cache[key]
            self._cache[digest] = (org_slug, now + self.cache_seconds)


def bigquery_verifier(client: Any, settings: Settings) -> Verify:
    from convergence.tenancy.api_keys import OrgApiKeys

    keys = OrgApiKeys(client, settings)
    return keys.verify


def check_root_key(settings: Settings, presented: str | None) -> None:
    """Raise AuthError unless `presented` is the CA root key (constant-time on the SHA256 digests)."""
    expected = settings.ca_root_api_key.get_secret_value() if settings.ca_root_api_key else ""
    if not expected:
        raise AuthError(403, ApiErrorCode.ROOT_KEY_NOT_CONFIGURED,
                        "CA_ROOT_API_KEY is not set: root routes are disabled")
    if not presented:
        raise AuthError(401, ApiErrorCode.ROOT_KEY_MISSING, "X-CA-Root-Key header is required")
    given = hashlib.sha256(presented.encode("utf-8")).digest()
    wanted = hashlib.sha256(expected.encode("utf-8")).digest()
    if not hmac.compare_digest(given, wanted):
        raise AuthError(403, ApiErrorCode.ROOT_KEY_INVALID, "invalid X-CA-Root-Key")
