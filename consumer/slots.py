"""Run slots: a global cap on concurrent runs and a per-org cap, so one org cannot starve the others.

Waiting for a slot keeps the message leased (the client extends its lease), so it does not count as a
delivery attempt. A message whose org already has `backlog` messages waiting here is handed off
instead (republished, then acked): it leaves room in flow control for other orgs' messages. A run is
handed off a bounded number of times (its `deferrals` attribute counts them); after that it waits here.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
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


class RunSlots:
    def __init__(self, total: int, per_org: int, backlog_per_org: int):
        self.total = total
        self.per_org = per_org
        self.backlog_per_org = backlog_per_org
        self._global = asyncio.Semaphore(total)
        self._org: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_org))
        self._waiting: dict[str, int] = defaultdict(int)
        self._running: dict[str, int] = defaultdict(int)

    def running(self, org: str | None = None) -> int:
        return self._running[org] if org is not None else sum(self._running.values())

    def waiting(self, org: str | None = None) -> int:
        return self._waiting[org] if org is not None else sum(self._waiting.values())

    @asynccontextmanager
    async def acquire(self, org: str, *, may_hand_off: bool = True) -> AsyncIterator[None]:
        """A run slot for `org`. Raises OrgBacklogFull when the org's backlog here is full, unless
        `may_hand_off` is False (the message has no hand-offs left): then it waits like the others."""
        org_sem = self._org[org]
        if may_hand_off and org_sem.locked() and self._waiting[org] >= self.backlog_per_org:
            raise OrgBacklogFull(org)
        self._waiting[org] += 1
        try:
            # Org slot first: a flooding org queues on its own semaphore, not on the global one.
            await org_sem.acquire()
            try:
                await self._global.acquire()
            except BaseException:
                org_sem.release()
                raise
        finally:
            self._waiting[org] -= 1
        self._running[org] += 1
        try:
            yield
        finally:
            self._running[org] -= 1
            self._global.release()
            org_sem.release()
            if not self._running[org] and not self._waiting[org]:
                # Keep memory flat across thousands of orgs.
                self._running.pop(org, None)
                self._waiting.pop(org, None)
                if not org_sem.locked():
                    self._org.pop(org, None)
