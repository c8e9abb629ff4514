"""Per-org and global request limits of the HTTP door (RATE_LIMIT_REQUESTS_PER_MINUTE per org,
RATE_LIMIT_GLOBAL_REQUESTS_PER_MINUTE for the instance).

Token buckets: a bucket holds up to `per_minute` tokens and refills at per_minute/60 tokens a second, so
a burst of `per_minute` requests passes and then one every 60/per_minute seconds. A refused request gets
the seconds until its next token (the Retry-After header).

Limits are per process: with N instances the service as a whole admits up to N times the limit. The
limit protects the instance and BigQuery behind it; a service-wide quota would need shared state.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str = "*") -> float:
        """0.0 when the request may go ahead (a token is taken), else seconds until it may (>= 1)."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._prune(now)
                bucket = self._buckets[key] = _Bucket(self.capacity, now)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return max(1.0, math.ceil((1.0 - bucket.tokens) / self.rate))

    def _prune(self, now: float) -> None:
        """Forget buckets that are full again (idle keys): memory stays bounded across many orgs."""
        full = [key for key, b in self._buckets.items()
                if b.tokens + (now - b.updated) * self.rate >= self.capacity]
        for key in full:
            del self._buckets[key]


class Limits:
    """The door's two limits; `check(org)` answers the Retry-After seconds of the first that refuses."""

    def __init__(self, enabled: bool, per_org_per_minute: int, global_per_minute: int,
                 clock: Callable[[], float] = time.monotonic):
        self.enabled = enabled
        self.per_org = RateLimiter(per_org_per_minute, clock)
        self.global_ = RateLimiter(global_per_minute, clock)

    def check_global(self) -> float:
        return self.global_.take("*") if self.enabled else 0.0

    def check_org(self, org_slug: str) -> float:
        return self.per_org.take(org_slug) if self.enabled else 0.0
