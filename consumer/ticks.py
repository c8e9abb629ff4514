"""Scheduler ticks: Cloud Scheduler publishes a tick to the ticks topic; each tick is fanned out into
run requests (publisher.fanout). The tick time is the body's `tick_at` if given, else the message's
publish time: Cloud Scheduler's body is static, so the publish time is what tells ticks apart.

After its fan-out, a tick also refreshes the org_usage_quotas reporting counters (`UsageRefresh`). A tick
is delivered to one subscriber of the ticks subscription, so one process per tick runs that MERGE, not
every consumer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from convergence.consumer.outcome import Outcome, OutcomeCode, OutcomeKind

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices

log = structlog.get_logger(__name__)


def tick_time(data: bytes, publish_time: datetime | None) -> datetime:
    try:
        body = json.loads(data.decode("utf-8")) if data else {}
    except (UnicodeDecodeError, ValueError):
        body = {}
    raw = body.get("tick_at") if isinstance(body, dict) else None
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
        except ValueError:
            log.warning("tick_at is not an ISO time; using the publish time", tick_at=raw[:40])
    when = publish_time or datetime.now(UTC)
    # Seconds vary between a tick and its duplicate; slots are whole minutes.
    return when.astimezone(UTC).replace(second=0, microsecond=0)


USAGE_REFRESH_EVERY = timedelta(minutes=15)


class UsageRefresh:
    """`OrgGate.refresh_usage` for the tick's day, at most once per 15-minute slot in this process (a tick
    and its duplicate delivered here refresh once; one delivered elsewhere rewrites the same counters).
    The first tick of a day also refreshes the day before, whose last window it covers. One MERGE on
    org_usage_quotas per tick: 24 a day with hourly ticks, 96 at most with ticks every 15 minutes, against
    BigQuery's 1,500 table modifications per table per day and 2 running + 20 queued mutating DML
    statements per table ("Quotas and limits" page)."""

    def __init__(self, gate: Callable[[], Any], window: timedelta, every: timedelta = USAGE_REFRESH_EVERY):
        self._gate = gate  # built on first use: no BigQuery client before the first tick
        self.window = window
        self.every = every
        self._last_slot: datetime | None = None
        self.refreshed: list[date] = []  # days refreshed, in order (tests, logs)

    def days(self, tick_at: datetime) -> list[date]:
        start = tick_at - self.window
        return [start.date(), tick_at.date()] if start.date() < tick_at.date() else [tick_at.date()]

    def __call__(self, tick_at: datetime) -> dict[str, int]:
        step = int(self.every.total_seconds())
        slot = datetime.fromtimestamp(int(tick_at.timestamp()) // step * step, tz=UTC)
        if slot == self._last_slot:
            return {}
        gate = self._gate()
        changed = {}
        for day in self.days(tick_at):
            changed[day.isoformat()] = gate.refresh_usage(day)
            self.refreshed.append(day)
        self._last_slot = slot
        return changed


class TickHandler:
    def __init__(self, fanout, usage: Callable[[datetime], dict[str, int]] | None = None):
        self.fanout = fanout
        self.usage = usage
        # One fan-out at a time in this process: a tick and its duplicate, delivered together, then run one
        # after the other and the second finds everything in the ledger.
        self._lock = asyncio.Lock()

    async def handle(self, data: bytes, attributes: Mapping[str, str], message_id: str,
                     delivery_attempt: int | None, *, deadline_seconds: float | None = None,
                     publish_time: datetime | None = None) -> Outcome:
        at = tick_time(data, publish_time)
        try:
            async with self._lock:
                report = await asyncio.to_thread(self.fanout.fan_out, at)
        except Exception as error:  # noqa: BLE001 - nack: the tick comes back and the ledger skips what went out
            log.exception("tick fan-out failed; nacking", tick_at=at.isoformat())
            return Outcome(OutcomeKind.RETRY, code=OutcomeCode.FANOUT_FAILED,
                           message=f"{type(error).__name__}: {error}")
        log.info(report.summary())
        details: dict[str, Any] = {"published": report.published}
        if self.usage is not None:
            try:
                async with self._lock:
                    details["usage_refreshed"] = await asyncio.to_thread(self.usage, at)
                if details["usage_refreshed"]:
                    log.info("usage counters refreshed", tick_at=at.isoformat(), rows=details["usage_refreshed"])
            except Exception as error:  # noqa: BLE001 - reporting counters only; the next tick refreshes them
                log.warning("usage counters not refreshed", tick_at=at.isoformat(),
                            error=f"{type(error).__name__}: {str(error)[:200]}")
        return Outcome(OutcomeKind.SUCCEEDED, details=details)


def tick_fanout(settings: Any, services: PlatformServices, loader: Any) -> Any:
    """The production fan-out: the service's request publisher, eligibility and ledger on BigQuery."""
    from convergence.publisher.fanout import TickFanOut
    from convergence.publisher.ledger import ExecutionLedger
    from convergence.tenancy.eligibility import EligibleOrgs
    from convergence.tenancy.pipeline_configs import OrgConfigReader

    return TickFanOut(loader, services.requests, EligibleOrgs(services.bigquery, settings),
                      ExecutionLedger(services.bigquery, settings),
                      interval=timedelta(minutes=settings.tick_window_minutes),
                      org_configs=OrgConfigReader(services.bigquery, settings))


class LazyFanOut:
    """Builds the fan-out (BigQuery and publisher clients) on the first tick, not when the worker starts."""

    def __init__(self, settings: Any, services: PlatformServices, loader: Any):
        self._args = (settings, services, loader)
        self._fanout: Any = None

    def fan_out(self, tick_at: datetime) -> Any:
        if self._fanout is None:
            self._fanout = tick_fanout(*self._args)
        return self._fanout.fan_out(tick_at)


def tick_pool(settings: Any, services: PlatformServices, loader: Any) -> Any:
    """A streaming pull on the ticks subscription. Ticks are rare and short: one at a time, small lease."""
    from convergence.consumer.flow import TICKS_PLAN
    from convergence.consumer.pool import SubscriberPool
    from convergence.consumer.slots import RunSlots
    from convergence.infra.clients import subscriber_client

    return SubscriberPool(
        settings.subscription_path(settings.ticks_subscription),
        TickHandler(LazyFanOut(settings, services, loader),
                    UsageRefresh(lambda: services.gate, timedelta(minutes=settings.tick_window_minutes))),
        RunSlots(total=1, per_org=1, backlog_per_org=TICKS_PLAN.backlog_per_org),  # one fan-out at a time
        TICKS_PLAN,
        grace_seconds=settings.shutdown_grace_seconds, subscriber=subscriber_client(settings),
    )
