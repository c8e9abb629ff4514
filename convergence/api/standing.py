"""The org gate at the HTTP door: a refusal the caller sees at once, before anything is published.

The consumer still decides every run (the door's answer is advisory, and other publishers skip the door).
So the door may answer from a standing a few seconds old: each org's standing is read at most once per
`GATE_CACHE_SECONDS`, and the runs this door queued since then are added to its runs-today count, so a
burst of calls cannot get past the quota while the standing is cached. Where the standing cannot be read
(BigQuery unavailable) the door lets the request through; the consumer's gate refuses it if it must.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from convergence.tenancy.gate import MONTHLY_QUOTA_EXCEEDED, QUOTA_EXCEEDED, GateDecision

log = structlog.get_logger(__name__)


@dataclass
class _Cached:
    standing: Any
    read_at: float
    queued_since: int = 0


class DoorGate:
    def __init__(self, gate: Callable[[], Any], ttl_seconds: float, clock: Callable[[], float] = time.monotonic):
        self._gate = gate  # called lazily: building the gate opens a BigQuery client
        self.ttl = ttl_seconds
        self.clock = clock
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def check(self, org: str, pipeline: str | None = None) -> GateDecision | None:
        """The gate's decision for `org` (and `pipeline`: PIPELINE_DISABLED when the org disabled it), or None
        when its standing could not be read."""
        async with self._locks.setdefault(org, asyncio.Lock()):  # one read per org at a time
            cached = self._cache.get(org)
            if cached is None or self.clock() - cached.read_at >= self.ttl:
                try:
                    standings = await asyncio.to_thread(self._gate().standings, [org])
                except Exception as error:  # noqa: BLE001 - advisory: the consumer's gate still decides
                    log.warning("org gate not read at the door; the consumer decides",
                                org_slug=org, error=f"{type(error).__name__}: {error}"[:300])
                    return None
                cached = self._cache[org] = _Cached(standings[org], self.clock())
            return self._gate().decide(org, cached.standing, cached.queued_since, pipeline=pipeline)

    def queued(self, org: str) -> None:
        """A run for `org` was queued: count it until the next read of the standing sees it in the run log."""
        cached = self._cache.get(org)
        if cached is not None:
            cached.queued_since += 1


class DoorOnce:
    """Has a run_once pipeline already succeeded for the org? At the door, from the run log, each answer
    cached: a success for good, a "not yet" for `ttl_seconds`. Advisory like the standing: where the run
    log cannot be read the request goes through and the consumer decides."""

    def __init__(self, gate: Callable[[], Any], ttl_seconds: float, clock: Callable[[], float] = time.monotonic):
        self._gate = gate
        self.ttl = ttl_seconds
        self.clock = clock
        self._cache: dict[tuple[str, str], tuple[bool, float]] = {}

    async def ran(self, org: str, pipeline: str) -> bool:
        key = (org, pipeline)
        cached = self._cache.get(key)
        if cached is not None and (cached[0] or self.clock() - cached[1] < self.ttl):
            return cached[0]
        try:
            ran = key in await asyncio.to_thread(self._gate().succeeded_pipelines, [key])
        except Exception as error:  # noqa: BLE001 - advisory: the consumer's check still decides
            log.warning("run_once not checked at the door; the consumer decides", org_slug=org,
                        error=f"{type(error).__name__}: {error}"[:300])
            return False
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = (ran, self.clock())
        return ran

    def queued(self, org: str, pipeline: str) -> None:
        """A run of it was queued: the next call reads the run log again instead of a cached "not yet"."""
        self._cache.pop((org, pipeline), None)


def seconds_until_quota_reset(now: datetime | None = None) -> int:
    """Daily quotas reset at midnight UTC (the gate counts runs per UTC day)."""
    now = now or datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return max(1, int((midnight - now).total_seconds() + 0.999))


def seconds_until_month_reset(now: datetime | None = None) -> int:
    """Monthly quotas reset at 00:00 UTC on the 1st (the gate counts runs per UTC month)."""
    now = now or datetime.now(UTC)
    first = now.date().replace(day=1) + timedelta(days=32)
    reset = datetime.combine(first.replace(day=1), datetime.min.time(), tzinfo=UTC)
    return max(1, int((reset - now).total_seconds() + 0.999))


def retry_after(decision: GateDecision) -> int | None:
    """Seconds until a quota refusal can pass; None for refusals that waiting does not lift."""
    if decision.code == QUOTA_EXCEEDED:
        return seconds_until_quota_reset()
    if decision.code == MONTHLY_QUOTA_EXCEEDED:
        return seconds_until_month_reset()
    return None


def refusal_status(decision: GateDecision) -> int:
    return 429 if decision.code in (QUOTA_EXCEEDED, MONTHLY_QUOTA_EXCEEDED) else 403
