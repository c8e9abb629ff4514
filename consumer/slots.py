"""Run slots: a global cap on concurrent runs and a per-org cap, so one org cannot starve the others.

Waiting for a slot keeps the message leased (the client extends its lease), so it does not count as a
delivery attempt. A message whose org already has `backlog` messages waiting here is handed off
instead (republished, then acked): it leaves room in flow control for other orgs' messages.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class OrgBacklogFull(Exception):
    """This process already holds enough waiting messages of the org."""


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
    async def acquire(self, org: str) -> AsyncIterator[None]:
        org_sem = self._org[org]
        if org_sem.locked() and self._waiting[org] >= self.backlog_per_org:
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
