"""Admission: may this run request run? Already succeeded (idempotency) and the org gate, for many
concurrent requests at once.

Every request needs both answers before it runs. Asked one by one that is three BigQuery jobs per run
(the consumer's whole cost for short pipelines), so:
- the requests that arrive together share one `succeeded_among` query (runtime.batching.MicroBatcher);
- an org's gate standing is reused for `gate_cache_seconds`, and orgs that need a fresh one share one
  `standings` query;
- admitting a run writes nothing. The quota counts today's runs in the append-only run log (rows the
  run's own logging writes anyway, by streaming insert) plus the runs this process admitted whose rows
  the log does not show yet, plus the requests admitted earlier in the same batch. So this process never
  lets an org past its quota, and other processes see its runs as soon as their RUNNING rows are written
  (across processes the quota stays soft).

Why no counter table: a MERGE of the counts per process per second puts N mutating DML statements a
second on one table, and BigQuery ("Quotas and limits" page) runs at most 2 mutating DML statements
(UPDATE, DELETE, MERGE) at once per table, queues 20 and fails the rest, and allows 1,500 table
modifications per table per day (one MERGE a second is 86,400). Reading the log costs no DML at all.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import structlog

from convergence.runtime.batching import MicroBatcher
from convergence.tenancy.central import utcnow
from convergence.tenancy.gate import GateDecision, OrgStanding

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Admission:
    already_succeeded: bool
    decision: GateDecision | None  # None when already succeeded (the gate is not asked)


@dataclass
class _Cached:
    standing: OrgStanding
    expires: float
    read_at: datetime  # wall time just before the read: an older read never replaces a newer one


class AdmissionControl:
    def __init__(self, services: Any, *, cache_seconds: float, batch_delay: float, clock=time.monotonic,
                 wall_clock=utcnow):
        self.services = services  # runlog and gate are reached lazily: building this creates no client
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.wall_clock = wall_clock
        self._standings: dict[str, _Cached] = {}
        # Runs this process admitted whose rows the run log has not shown yet: org -> run_id -> UTC day.
        self._unlogged: dict[str, dict[str, date]] = {}
        self._counts_lock = threading.Lock()
        self._batcher: MicroBatcher[tuple[str, str, str | None], Admission] = MicroBatcher(
            self._admit_batch, max_delay=batch_delay, max_size=500, max_in_flight=2, name="admission")
        self.calls: Counter[str] = Counter()  # BigQuery calls by kind (tests, benchmark)

    @classmethod
    def from_settings(cls, services: Any) -> AdmissionControl:
        s = services.settings
        return cls(services, cache_seconds=s.gate_cache_seconds, batch_delay=s.batch_delay_ms / 1000)

    async def admit(self, run_id: str, org_slug: str, pipeline: str | None = None) -> Admission:
        """With `pipeline`, a pipeline the org disabled is refused (PIPELINE_DISABLED, from the same cached
        standing)."""
        return await self._batcher.submit((org_slug, run_id, pipeline))

    def count_run(self, org_slug: str, run_id: str | None = None) -> None:
        """One more run against the org's daily quota, counted here until the run log shows its rows.
        Without a run_id the run can never be matched to its rows: it counts until the day ends."""
        run_id = run_id or f"unmatched-{uuid.uuid4().hex}"
        today = self.wall_clock().date()
        with self._counts_lock:
            self._unlogged.setdefault(org_slug, {})[run_id] = today

    def unlogged(self, org_slug: str) -> int:
        """Runs of the org this process admitted today that the run log did not show at the last read."""
        today = self.wall_clock().date()
        with self._counts_lock:
            return sum(1 for day in self._unlogged.get(org_slug, {}).values() if day == today)

    async def flush_usage(self) -> None:
        """Nothing to write: kept for callers of the former counter flush."""

    async def aclose(self) -> None:
        await self._batcher.drain()

    # -- internals ---------------------------------------------------------------------------------------
    async def _admit_batch(self, items: list[tuple[str, str, str | None]]) -> list[Admission]:
        now = self.clock()
        stale = {org for org, _, _ in items if (c := self._standings.get(org)) is None or c.expires <= now}
        stale = {org for org in stale if _valid_slug(org)}
        # The two lookups are independent: run them side by side (latency is the slower one, not the sum).
        lookups = [asyncio.to_thread(self._succeeded, items)]
        if stale:
            lookups.append(asyncio.to_thread(self._read_standings, stale))
        succeeded, *fresh = await asyncio.gather(*lookups)
        if fresh:
            standings, read_at = fresh[0]
            for org, standing in standings.items():
                seen = self._standings.get(org)
                if seen is None or seen.read_at <= read_at:
                    self._standings[org] = _Cached(standing, now + self.cache_seconds, read_at)
        gate = self.services.gate
        out = []
        admitted: Counter[str] = Counter()  # requests of one batch take quota slots one after another
        for org, run_id, pipeline in items:
            if (org, run_id) in succeeded:
                out.append(Admission(True, None))
                continue
            cached = self._standings.get(org)
            if cached is None:  # not a valid slug: the gate says why
                out.append(Admission(False, gate.check(org, pipeline)))
                continue
            decision = gate.decide(org, cached.standing, self.unlogged(org) + admitted[org], pipeline=pipeline)
            admitted[org] += decision.allowed
            out.append(Admission(False, decision))
        if len(self._standings) > 100_000:  # thousands of orgs is normal; unbounded is not
            self._standings = {o: c for o, c in self._standings.items() if c.expires > now}
        return out

    def _succeeded(self, items: list[tuple[str, str, str | None]]) -> set[tuple[str, str]]:
        self.calls["succeeded_among"] += 1
        return self.services.runlog.succeeded_among([(org, run_id) for org, run_id, _ in items])

    def _read_standings(self, orgs: set[str]) -> tuple[dict[str, OrgStanding], datetime]:
        """Standings, and this process's unlogged runs that the same snapshot shows logged are dropped.

        The gate is asked about the unlogged runs known now and about every run started from now on (a
        run counted while the query is under way starts after this instant), so a run the log already
        counts is never also counted as unlogged."""
        read_at = self.wall_clock()
        today = read_at.date()
        with self._counts_lock:
            for org in list(self._unlogged):  # a new day: yesterday's runs no longer count
                runs = {r: d for r, d in self._unlogged[org].items() if d == today}
                if runs:
                    self._unlogged[org] = runs
                else:
                    del self._unlogged[org]
            mine = [(org, run_id) for org in orgs for run_id in self._unlogged.get(org, {})
                    if not run_id.startswith("unmatched-")]
        standings = self.services.gate.standings(orgs, mine=mine, since=read_at)
        with self._counts_lock:
            for org, standing in standings.items():
                runs = self._unlogged.get(org)
                for run_id in standing.logged & set(runs or ()):
                    del runs[run_id]
        self.calls["standings"] += 1
        return standings, read_at


def _valid_slug(org: str) -> bool:
    from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug

    try:
        validate_org_slug(org)
    except InvalidIdentifier:
        return False
    return True
