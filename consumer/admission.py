"""Admission: may this run request run? Already succeeded (idempotency) and the org gate, for many
concurrent requests at once.

Every request needs both answers before it runs. Asked one by one that is three BigQuery jobs per run
(the consumer's whole cost for short pipelines), so:
- the requests that arrive together share one `succeeded_among` query (runtime.batching.MicroBatcher);
- an org's gate standing is reused for `gate_cache_seconds`, and orgs that need a fresh one share one
  `standings` query;
- runs counted against the daily quota are added up here and written with one MERGE for all orgs at
  most every `quota_flush_seconds` (and at shutdown). Decisions count the runs not yet written and the
  requests admitted earlier in the same batch, so this process does not let an org past its quota;
  other processes see its runs after the next flush (across processes the quota stays soft, as it
  always was, and counts not yet written are lost if the process is killed).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import structlog

from runtime.batching import MicroBatcher
from tenancy.gate import GateDecision, OrgStanding

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Admission:
    already_succeeded: bool
    decision: GateDecision | None  # None when already succeeded (the gate is not asked)


@dataclass
class _Cached:
    standing: OrgStanding
    expires: float
    counted_base: int  # this process's runs already written to the counters when `standing` was read


class AdmissionControl:
    def __init__(self, services: Any, *, cache_seconds: float, quota_flush_seconds: float, batch_delay: float,
                 clock=time.monotonic):
        self.services = services  # runlog and gate are reached lazily: building this creates no client
        self.cache_seconds = cache_seconds
        self.quota_flush_seconds = quota_flush_seconds
        self.clock = clock
        self._standings: dict[str, _Cached] = {}
        self._recorded: Counter[str] = Counter()  # runs counted by this process, ever
        self._written: Counter[str] = Counter()  # of those, already in org_usage_quotas
        self._writing: Counter[str] = Counter()  # of those, in a MERGE under way
        self._counts_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._flush_task: asyncio.Task[None] | None = None
        self._batcher: MicroBatcher[tuple[str, str], Admission] = MicroBatcher(
            self._admit_batch, max_delay=batch_delay, max_size=500, max_in_flight=2, name="admission")
        self.calls: Counter[str] = Counter()  # BigQuery calls by kind (tests, benchmark)

    @classmethod
    def from_settings(cls, services: Any) -> AdmissionControl:
        s = services.settings
        return cls(services, cache_seconds=s.gate_cache_seconds, quota_flush_seconds=s.quota_flush_seconds,
                   batch_delay=s.batch_delay_ms / 1000)

    async def admit(self, run_id: str, org_slug: str) -> Admission:
        return await self._batcher.submit((org_slug, run_id))

    def count_run(self, org_slug: str) -> None:
        """One more run against the org's daily quota; written with the next flush."""
        self._recorded[org_slug] += 1
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.ensure_future(self._flush_later())

    async def flush_usage(self) -> None:
        """Write the runs counted and not yet written (at shutdown, and every quota_flush_seconds)."""
        await asyncio.to_thread(self._write_counts)

    async def aclose(self) -> None:
        await self._batcher.drain()
        if self._flush_task is not None and not self._flush_task.done():
            self._flush_task.cancel()
        try:
            await self.flush_usage()
        except Exception:  # noqa: BLE001 - at shutdown: say what is lost, do not hide other cleanup
            log.exception("quota counters not written at shutdown",
                          runs=sum(self._recorded.values()) - sum(self._written.values()))

    # -- internals ---------------------------------------------------------------------------------------
    async def _flush_later(self) -> None:
        await asyncio.sleep(self.quota_flush_seconds)
        try:
            await self.flush_usage()
        except Exception as error:  # noqa: BLE001 - counts stay pending and go with the next flush
            log.warning("quota counters not written; retrying with the next flush",
                        error=f"{type(error).__name__}: {error}"[:300])
            self._flush_task = asyncio.ensure_future(self._flush_later())

    def _write_counts(self) -> None:
        with self._write_lock:  # one MERGE at a time
            with self._counts_lock:
                pending = {org: n - self._written[org] - self._writing[org] for org, n in list(self._recorded.items())}
                pending = {org: n for org, n in pending.items() if n > 0}
                self._writing.update(pending)
            if not pending:
                return
            try:
                self.services.gate.record_runs(pending)
            except BaseException:
                with self._counts_lock:
                    self._writing.subtract(pending)  # not written: they go with the next flush
                raise
            with self._counts_lock:  # one step: a reader never sees them neither writing nor written
                self._writing.subtract(pending)
                self._written.update(pending)
            self.calls["record_runs"] += 1

    async def _admit_batch(self, items: list[tuple[str, str]]) -> list[Admission]:
        now = self.clock()
        stale = {org for org, _ in items if (c := self._standings.get(org)) is None or c.expires <= now}
        stale = {org for org in stale if _valid_slug(org)}
        # The two lookups are independent: run them side by side (latency is the slower one, not the sum).
        lookups = [asyncio.to_thread(self._succeeded, items)]
        if stale:
            lookups.append(asyncio.to_thread(self._read_standings, stale))
        succeeded, *fresh = await asyncio.gather(*lookups)
        for org, (standing, written) in (fresh[0] if fresh else {}).items():
            self._standings[org] = _Cached(standing, now + self.cache_seconds, written)
        gate = self.services.gate
        out = []
        admitted: Counter[str] = Counter()  # requests of one batch take quota slots one after another
        for org, run_id in items:
            if (org, run_id) in succeeded:
                out.append(Admission(True, None))
                continue
            cached = self._standings.get(org)
            if cached is None:  # not a valid slug: the gate says why
                out.append(Admission(False, gate.check(org)))
                continue
            unwritten = self._recorded[org] - cached.counted_base
            decision = gate.decide(org, cached.standing, unwritten + admitted[org])
            admitted[org] += decision.allowed
            out.append(Admission(False, decision))
        if len(self._standings) > 100_000:  # thousands of orgs is normal; unbounded is not
            self._standings = {o: c for o, c in self._standings.items() if c.expires > now}
        return out

    def _succeeded(self, items: list[tuple[str, str]]) -> set[tuple[str, str]]:
        self.calls["succeeded_among"] += 1
        return self.services.runlog.succeeded_among(items)

    def _read_standings(self, orgs: set[str]) -> dict[str, tuple[OrgStanding, int]]:
        standings = self.services.gate.standings(orgs)
        # Runs of a MERGE under way may or may not be in what was just read: they count as written, so a
        # race can only under-count (the quota is soft), never refuse a run that has its slot.
        with self._counts_lock:
            written = {org: self._written[org] + self._writing[org] for org in orgs}
        self.calls["standings"] += 1
        return {org: (standing, written[org]) for org, standing in standings.items()}


def _valid_slug(org: str) -> bool:
    from warehouse.identifiers import InvalidIdentifier, validate_org_slug

    try:
        validate_org_slug(org)
    except InvalidIdentifier:
        return False
    return True
