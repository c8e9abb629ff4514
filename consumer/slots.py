"""Run slots: a global cap on concurrent runs and a per-org cap (the org's plan's `concurrent_pipelines`,
bounded by PER_ORG_CONCURRENCY), so one org cannot starve the others.

Waiting for a slot keeps the message leased (the client extends its lease), so it does not count as a
delivery attempt. A message whose org already has `backlog` messages waiting here is handed off
instead (republished, then acked): it leaves room in flow control for other orgs' messages. A run is
handed off a bounded number of times (its `deferrals` attribute counts them); after that it waits here.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

# Longest `deferrals` value read: attributes are untrusted, a huge digit string must not cost anything.
_MAX_COUNT_DIGITS = 6


class OrgBacklogFull(Exception):
    """This process already holds enough waiting messages of the org."""


def hand_off_count(attributes: Mapping[str, str]) -> int:
    """How many times this run was handed off (the `deferrals` attribute). Attributes are untrusted: a
    missing, empty, negative or non-integer value ("NaN", "1.5", " 2") counts as 0."""
    raw = attributes.get("deferrals")
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > _MAX_COUNT_DIGITS:
        return 0
    return int(raw)


Limit = Callable[[str], Awaitable[int | None]]


class _OrgSlots:
    __slots__ = ("running", "waiters")

    def __init__(self) -> None:
        self.running = 0
        self.waiters: list[asyncio.Future[None]] = []


class RunSlots:
    """`per_org` is this process's upper bound per org; `limit(org)`, when given, is the org's own cap (its
    plan's `concurrent_pipelines`), read when a run asks for a slot: the smaller one holds."""

    def __init__(self, total: int, per_org: int, backlog_per_org: int, limit: Limit | None = None):
        self.total = total
        self.per_org = per_org
        self.backlog_per_org = backlog_per_org
        self.limit = limit
        self._global = asyncio.Semaphore(total)
        self._org: dict[str, _OrgSlots] = {}
        self._waiting: dict[str, int] = defaultdict(int)
        self._running: dict[str, int] = defaultdict(int)

    def running(self, org: str | None = None) -> int:
        return self._running[org] if org is not None else sum(self._running.values())

    def waiting(self, org: str | None = None) -> int:
        return self._waiting[org] if org is not None else sum(self._waiting.values())

    async def cap(self, org: str) -> int:
        own = await self.limit(org) if self.limit is not None else None
        # A plan of 0 concurrent runs would hold its messages forever: at least one runs.
        return max(1, min(self.per_org, own)) if own is not None else self.per_org

    @asynccontextmanager
    async def acquire(self, org: str, *, may_hand_off: bool = True) -> AsyncIterator[None]:
        """A run slot for `org`. Raises OrgBacklogFull when the org's backlog here is full, unless
        `may_hand_off` is False (the message has no hand-offs left): then it waits like the others."""
        self._waiting[org] += 1  # counted while the cap is read, so the org's entry stays
        try:
            cap = await self.cap(org)
            slots = self._org.setdefault(org, _OrgSlots())
            if may_hand_off and slots.running >= cap and self._waiting[org] > self.backlog_per_org:
                raise OrgBacklogFull(org)
            # Org slot first: a flooding org queues on its own slots, not on the global semaphore.
            while slots.running >= cap:
                waiter = asyncio.get_running_loop().create_future()
                slots.waiters.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter in slots.waiters:
                        slots.waiters.remove(waiter)
            slots.running += 1
            try:
                await self._global.acquire()
            except BaseException:
                self._release_org(org, slots)
                raise
        finally:
            self._waiting[org] -= 1
        self._running[org] += 1
        try:
            yield
        finally:
            self._running[org] -= 1
            self._global.release()
            self._release_org(org, slots)

    def _release_org(self, org: str, slots: _OrgSlots) -> None:
        slots.running -= 1
        # Every waiter checks again against its own cap (a plan change may have moved it), oldest first.
        for waiter in slots.waiters:
            if not waiter.done():
                waiter.set_result(None)
        slots.waiters.clear()
        if not slots.running and not self._waiting[org]:
            # Keep memory flat across thousands of orgs.
            self._org.pop(org, None)
            self._running.pop(org, None)
            self._waiting.pop(org, None)
