"""`convergence consume`: the worker process. Assembles one pool per subscription (run requests, dead
letters, scheduler ticks) on one event loop, and closes everything in order on the way out."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping
from typing import Any

import structlog

from convergence.consumer.dead_letters import DeadLetterHandler
from convergence.consumer.flow import FlowPlan
from convergence.consumer.handler import RunHandler
from convergence.consumer.pool import SubscriberPool
from convergence.consumer.slots import RunSlots
from convergence.consumer.ticks import tick_pool
from convergence.infra.clients import subscriber_client
from convergence.observability import metrics
from convergence.pipeline import PipelineLoader
from convergence.pipeline.validation import pipeline_files
from convergence.settings import Settings

log = structlog.get_logger(__name__)


def longest_timeout_seconds(loader: PipelineLoader) -> float:
    """The longest pipeline timeout under configs/: leases must outlive it."""
    longest = 30 * 60.0
    for path in pipeline_files(loader.configs_dir):
        try:
            longest = max(longest, loader.load_file(path).timeout_seconds)
        except Exception:  # noqa: BLE001, S112 - a broken config is rejected per message, not at start-up
            continue
    return longest


class ConsumerService:
    def __init__(self, settings: Settings, services: Any, *, notify=None, with_dead_letters: bool = True,
                 extra_pools: list[SubscriberPool] | None = None, with_ticks: bool = True):
        self.settings = settings
        self.services = services
        metrics.configure(settings)  # metrics_org_label_limit
        self.metrics_server: metrics.MetricsServer | None = None
        self.loader = PipelineLoader(settings.configs_dir)
        self.plan = FlowPlan.derive(
            workers=settings.consumer_workers, per_org=settings.per_org_concurrency,
            longest_timeout_seconds=longest_timeout_seconds(self.loader),
            max_lease_extension=settings.max_lease_extension_seconds,
        )
        self.slots = RunSlots(settings.consumer_workers, settings.per_org_concurrency, self.plan.backlog_per_org)
        self.handler = RunHandler(services=services, loader=self.loader, notify=notify, hand_off=self.republish)
        self.pools = [SubscriberPool(
            settings.subscription_path(settings.requests_subscription), self.handler, self.slots, self.plan,
            hand_off=self.republish, grace_seconds=settings.shutdown_grace_seconds,
            subscriber=subscriber_client(settings),
        )]
        if with_dead_letters:
            dead_letter_slots = RunSlots(2, 2, 1000)
            self.pools.append(SubscriberPool(
                settings.subscription_path(settings.dead_letter_subscription),
                DeadLetterHandler(services, notify), dead_letter_slots,
                FlowPlan(max_messages=10, max_bytes=10 * 1024 * 1024, max_lease_duration=600,
                         max_lease_extension=60, backlog_per_org=1000),
                grace_seconds=settings.shutdown_grace_seconds, subscriber=subscriber_client(settings),
            ))
        if with_ticks:  # scheduler ticks -> run requests (consumer/ticks.py)
            self.pools.append(tick_pool(settings, services, self.loader))
        self.pools.extend(extra_pools or [])

    async def republish(self, data: bytes, attributes: Mapping[str, str]) -> None:
        """Hand a request back to the requests topic (same run_id): used when an org is over its cap here,
        and by push delivery for runs longer than a push request may last."""
        publisher = self.services.requests
        deferrals = int(attributes.get("deferrals", "0") or 0) + 1
        future = publisher.publish_raw(data, {**attributes, "deferrals": str(deferrals)})
        await asyncio.wrap_future(future)

    async def run(self, *, handle_signals: bool = True) -> None:
        """Until SIGTERM/SIGINT (or stop()). Signal handlers need the main thread; tests pass False."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        log.info("consumer starting", workers=self.settings.consumer_workers,
                 per_org=self.settings.per_org_concurrency, max_messages=self.plan.max_messages,
                 max_lease_duration=self.plan.max_lease_duration)
        if self.settings.metrics_port is not None:  # /metrics and /health for Prometheus and probes
            self.metrics_server = await metrics.start_metrics_server(self.settings.metrics_port,
                                                                     self.settings.http_host)
            log.info("metrics listening", port=self.metrics_server.port)
        try:
            await asyncio.gather(*(pool.run() for pool in self.pools))
        finally:
            if self.metrics_server is not None:
                await self.metrics_server.close()
            await self.handler.aclose()
            await asyncio.to_thread(self.services.close)
            await self.services.aclose()
            log.info("consumer stopped")

    def stop(self) -> None:
        for pool in self.pools:
            pool.stop()
