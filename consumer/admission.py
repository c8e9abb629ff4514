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
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import structlog

from convergence.runtime.batching import MicroBatcher
from convergence.tenancy.central import utcnow
from convergence.tenancy.gate import GateDecision, OrgStanding

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Admission:
    already_succeeded: bool
    decision: GateDecision | None  # None when already succeeded (the gate is not asked)


@dataclass(frozen=True)
class OnceCheck:
    refused: bool
    message: str = ""


@dataclass
class _Cached:
    standing: OrgStanding
    expires: float
    read_at: datetime  # wall time just before the read: an older read never replaces a newer one


class AdmissionControl:
    def __init__(self, services: PlatformServices, *, cache_seconds: float, batch_delay: float, clock=time.monotonic,
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
        # Standings asked for by the run slots (the org's plan caps its concurrent runs): orgs asking
        # together share one `standings` query, and admission then reuses the cached answer.
        self._slot_batcher: MicroBatcher[str, OrgStanding | None] = MicroBatcher(
            self._standings_batch, max_delay=batch_delay, max_size=500, max_in_flight=2, name="slot-standings")
        # run_once pipelines: (org, pipeline) -> (succeeded, expires); a success stays known for good.
        self._once: dict[tuple[str, str], tuple[bool, float]] = {}
        # Their runs under way in this process: (org, pipeline) -> run_id -> when the claim lapses.
        self._once_running: dict[tuple[str, str], dict[str, float]] = {}
        self._once_batcher: MicroBatcher[tuple[str, str], bool] = MicroBatcher(
            self._once_batch, max_delay=batch_delay, max_size=500, max_in_flight=2, name="run-once")
        self.calls: Counter[str] = Counter()  # BigQuery calls by kind (tests, benchmark)

    @classmethod
    def from_settings(cls, services: PlatformServices) -> AdmissionControl:
        s = services.settings
        return cls(services, cache_seconds=s.gate_cache_seconds, batch_delay=s.batch_delay_ms / 1000)

    async def admit(self, run_id: str, org_slug: str, pipeline: str | None = None) -> Admission:
        """With `pipeline`, a pipeline the org disabled is refused (PIPELINE_DISABLED, from the same cached
        standing)."""
        return await self._batcher.submit((org_slug, run_id, pipeline))

    async def concurrency(self, org_slug: str) -> int | None:
        """The org's plan's `concurrent_pipelines`, from its cached standing (read when stale, batched with
        other orgs'). None when the org has no known plan (admission refuses it anyway). A standing that
        cannot be read gives 1: the run waits its turn rather than pass the org's cap."""
        cached = self._standings.get(org_slug)
        standing = cached.standing if cached is not None and cached.expires > self.clock() else None
        if standing is None:
            if not _valid_slug(org_slug):
                return None
            try:
                standing = await self._slot_batcher.submit(org_slug)
            except Exception as error:  # noqa: BLE001 - admission reads it again and decides
                log.warning("org standing not read for its run slots", org_slug=org_slug,
                            error=f"{type(error).__name__}: {error}"[:300])
                return 1
        return self.services.gate.concurrency(standing) if standing is not None else None

    async def check_once(self, org_slug: str, pipeline: str, run_id: str, *, forced: bool,
                         timeout_seconds: float) -> OnceCheck:
        """A run_once pipeline: refused when it already succeeded for the org (the run log, one query for
        the pairs asked together, cached like the gate standing) or another run of it is under way in this
        process; `forced` (the pipeline's force_param set) skips the check. An allowed run holds a claim
        until `once_done` or `timeout_seconds` (a run that never reports back does not block for good).
        Across processes the check is soft, like the quota."""
        key = (org_slug, pipeline)
        now = self.clock()
        running = {r: until for r, until in self._once_running.get(key, {}).items() if until > now and r != run_id}
        if not forced:
            if running:
                return OnceCheck(True, f"pipeline {pipeline} runs once per org and is running for org {org_slug} "
                                       f"(run {next(iter(running))}); pass its force parameter to run it again")
            cached = self._once.get(key)
            ran = cached[0] if cached is not None and (cached[0] or cached[1] > now) else None
            if ran is None:
                ran = await self._once_batcher.submit(key)
            if ran:
                return OnceCheck(True, f"pipeline {pipeline} runs once per org and already ran for org {org_slug}; "
                                       "pass its force parameter to run it again")
        self._once_running[key] = {**running, run_id: self.clock() + timeout_seconds}
        return OnceCheck(False)

    def once_done(self, org_slug: str, pipeline: str, run_id: str, succeeded: bool) -> None:
        key = (org_slug, pipeline)
        runs = self._once_running.get(key)
        if runs is None or runs.pop(run_id, None) is None:
            return
        if not runs:
            del self._once_running[key]
        if succeeded:
            self._once[key] = (True, 0.0)

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
        await self._once_batcher.drain()
        await self._slot_batcher.drain()
        await self._batcher.drain()

    # -- internals ---------------------------------------------------------------------------------------
    async def _standings_batch(self, orgs: list[str]) -> list[OrgStanding | None]:
        now = self.clock()
        stale = {org for org in orgs if (c := self._standings.get(org)) is None or c.expires <= now}
        if stale:
            self._store(*await asyncio.to_thread(self._read_standings, stale), now)
        return [c.standing if (c := self._standings.get(org)) is not None else None for org in orgs]

    async def _once_batch(self, keys: list[tuple[str, str]]) -> list[bool]:
        self.calls["succeeded_pipelines"] += 1
        ran = await asyncio.to_thread(self.services.gate.succeeded_pipelines, set(keys))
        expires = self.clock() + self.cache_seconds
        for key in set(keys):
            self._once[key] = (key in ran, expires)
        if len(self._once) > 100_000:
            now = self.clock()
            self._once = {k: v for k, v in self._once.items() if v[0] or v[1] > now}
        return [key in ran for key in keys]

    def _store(self, standings: dict[str, OrgStanding], read_at: datetime, now: float) -> None:
        for org, standing in standings.items():
            seen = self._standings.get(org)
            if seen is None or seen.read_at <= read_at:
                self._standings[org] = _Cached(standing, now + self.cache_seconds, read_at)

    async def _admit_batch(self, items: list[tuple[str, str, str | None]]) -> list[Admission]:
        now = self.clock()
        stale = {org for org, _, _ in items if (c := self._standings.get(org)) is None or c.expires <= now}
        stale = {org for org in stale if _valid_slug(org)}
        # The two lookups are independent: run them side by side (latency is the slower one, not the sum).
        lookups: list[Awaitable[Any]] = [asyncio.to_thread(self._succeeded, items)]
        if stale:
            lookups.append(asyncio.to_thread(self._read_standings, stale))
        succeeded, *fresh = await asyncio.gather(*lookups)
        if fresh:
            standings, read_at = fresh[0]
            self._store(standings, read_at, now)
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
                unlogged = self._unlogged.get(org)
                if unlogged:
                    for run_id in standing.logged & set(unlogged):
                        del unlogged[run_id]
        self.calls["standings"] += 1
        return standings, read_at


def _valid_slug(org: str) -> bool:
    from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug

    try:
        validate_org_slug(org)
    except InvalidIdentifier:
        return False
    return True
