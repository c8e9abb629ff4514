"""`convergence consume`: the worker process. Assembles one pool per subscription (run requests, their
overflow, dead letters, scheduler ticks) on one event loop, and closes everything in order on the way out.

Supervision: a pool whose stream ends other than by shutdown (subscription deleted, permission denied,
...) cannot recover by itself. The other pools are then drained like on SIGTERM and `run()` returns 1,
so the process exits non-zero and the platform restarts it.

Shutdown: Cloud Run sends SIGKILL 10 s after SIGTERM (Cloud Run docs, "Container runtime contract").
The pools get `shutdown_grace_seconds` (default 6) for running runs; the rest of the 10 s is for the
run-log rows, events and counters still in memory."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from convergence.consumer.dead_letters import DeadLetterHandler
from convergence.consumer.flow import DEAD_LETTER_PLAN, FlowPlan
from convergence.consumer.handler import RunHandler
from convergence.consumer.pool import SubscriberPool
from convergence.consumer.slots import RunSlots, hand_off_count
from convergence.consumer.ticks import tick_pool
from convergence.infra.clients import subscriber_client
from convergence.observability import metrics
from convergence.pipeline import PipelineLoader
from convergence.pipeline.validation import pipeline_files
from convergence.runtime.threads import in_daemon_thread
from convergence.settings import Settings
from convergence.settings.model import EXIT_MARGIN_SECONDS, PLATFORM_STOP_SECONDS

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices

log = structlog.get_logger(__name__)

# Each closing step gets at least this long, even when the drain used the whole window.
MIN_CLOSE_SECONDS = 0.5


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
    _stop_requested_at: float | None = None  # monotonic time of SIGTERM / stop()

    def __init__(self, settings: Settings, services: PlatformServices, *, notify=None,
                 with_dead_letters: bool = True, with_overflow: bool = True,
                 extra_pools: list[SubscriberPool] | None = None, with_ticks: bool = True):
        self.settings = settings
        self.services = services
        metrics.configure(settings)  # metrics_org_label_limit
        self.metrics_server: metrics.MetricsServer | None = None
        self.loader = PipelineLoader(settings.configs_dir)
        longest = longest_timeout_seconds(self.loader)
        self.plan = FlowPlan.derive(
            workers=settings.consumer_workers, per_org=settings.per_org_concurrency,
            longest_timeout_seconds=longest,
            max_lease_extension=settings.max_lease_extension_seconds,
        )
        self.handler = RunHandler(services=services, loader=self.loader, notify=notify, hand_off=self.republish)
        # Per org: its plan's concurrent_pipelines, at most PER_ORG_CONCURRENCY in this process.
        self.slots = RunSlots(settings.consumer_workers, settings.per_org_concurrency, self.plan.backlog_per_org,
                              limit=self.handler.admission.concurrency)
        self.pools = [SubscriberPool(
            settings.subscription_path(settings.requests_subscription), self.handler, self.slots, self.plan,
            hand_off=self.republish, grace_seconds=settings.shutdown_grace_seconds,
            subscriber=subscriber_client(settings),
        )]
        if with_overflow:
            # Runs handed off once wait here by the lease for their org's slots (the same slots), never
            # handed off again: a flooding org fills this subscription's flow control, not the requests one.
            self.pools.append(SubscriberPool(
                settings.subscription_path(settings.overflow_subscription), self.handler, self.slots,
                self.plan.for_overflow(per_org=settings.per_org_concurrency, longest_timeout_seconds=longest),
                grace_seconds=settings.shutdown_grace_seconds, subscriber=subscriber_client(settings),
                max_hand_offs=0,
            ))
        if with_dead_letters:
            # Two dead letters recorded at once, whatever their org: the drain is not a tenant's work.
            dead_letter_slots = RunSlots(total=2, per_org=2, backlog_per_org=DEAD_LETTER_PLAN.backlog_per_org)
            self.pools.append(SubscriberPool(
                settings.subscription_path(settings.dead_letter_subscription),
                DeadLetterHandler(services, notify), dead_letter_slots, DEAD_LETTER_PLAN,
                grace_seconds=settings.shutdown_grace_seconds, subscriber=subscriber_client(settings),
            ))
        if with_ticks:  # scheduler ticks -> run requests (consumer/ticks.py)
            self.pools.append(tick_pool(settings, services, self.loader))
        self.pools.extend(extra_pools or [])

    async def republish(self, data: bytes, attributes: Mapping[str, str]) -> None:
        """Hand a request to the overflow topic (same run_id, byte-identical body) when its org is over its
        cap here: once per run (`deferrals` counts it), then it waits on the overflow subscription."""
        publisher = self.services.overflow
        deferrals = hand_off_count(attributes) + 1  # untrusted attribute: a bad value counts as 0
        future = publisher.publish_raw(data, {**attributes, "deferrals": str(deferrals)})
        await asyncio.wrap_future(future)

    async def run(self, *, handle_signals: bool = True) -> int:
        """Until SIGTERM/SIGINT (or stop()), or until a pool loses its stream. Returns the exit code: 0, or
        1 when a stream was lost. Signal handlers need the main thread; tests pass False."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        log.info("consumer starting", workers=self.settings.consumer_workers,
                 per_org=self.settings.per_org_concurrency, max_messages=self.plan.max_messages,
                 max_lease_duration=self.plan.max_lease_duration)
        started = 0.0
        # Opened in order, closed in reverse: the probes go first, then the handler's buffered run-log rows
        # and counters, then the clients they were written with.
        # Each closing step is bounded by what is left of the platform's stop window: a BigQuery or Pub/Sub that
        # hangs at shutdown costs rows still in memory (their runs were not acked: they come back), never the
        # SIGKILL of a process that is still flushing.
        async with contextlib.AsyncExitStack() as resources:
            resources.push_async_callback(self._bounded, "HTTP sessions", self.services.aclose)
            resources.push_async_callback(self._bounded, "run-log rows and events",
                                          lambda: in_daemon_thread(self.services.close, name="flush"))
            resources.push_async_callback(self._bounded, "run-log commits and counters", self.handler.aclose)
            if self.settings.metrics_port is not None:  # /metrics, /health and /ready for Prometheus, probes
                self.metrics_server = await start_probe_server(self, self.settings.metrics_port,
                                                               self.settings.http_host)
                resources.push_async_callback(self.metrics_server.close)
                log.info("metrics listening", port=self.metrics_server.port)
            try:
                await self._supervise()
            finally:
                started = time.monotonic()
        log.info("consumer stopped", flush_seconds=round(time.monotonic() - started, 2))
        lost = [pool.subscription_path for pool in self.pools if pool.lost]
        if lost:
            log.error("exiting with code 1: a streaming pull was lost", subscriptions=lost)
            return 1
        return 0

    async def _supervise(self) -> None:
        """Run every pool; the first one that ends by itself (lost stream) drains the others."""
        tasks = [asyncio.create_task(pool.run(), name=f"pool {pool.subscription_path}") for pool in self.pools]
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if pending and any(pool.lost for pool in self.pools):
                    self.stop()  # drained, not cancelled
            for task in tasks:
                task.result()  # a pool's own error, if any
        finally:
            for task in tasks:
                task.cancel()

    def stop(self) -> None:
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        for pool in self.pools:
            pool.stop()

    def close_deadline(self) -> float:
        """When closing must be over: the platform's window after SIGTERM, less the exit margin."""
        stopped = self._stop_requested_at if self._stop_requested_at is not None else time.monotonic()
        return stopped + PLATFORM_STOP_SECONDS - EXIT_MARGIN_SECONDS

    async def _bounded(self, what: str, close: Callable[[], Awaitable[Any]]) -> None:
        seconds = max(MIN_CLOSE_SECONDS, self.close_deadline() - time.monotonic())
        try:
            await asyncio.wait_for(close(), timeout=seconds)
        except TimeoutError:
            log.error("shutdown: gave up waiting to close; unacknowledged runs will be redelivered", what=what,
                      seconds=round(seconds, 2))
        except Exception as error:  # noqa: BLE001 - closing the rest matters more than this step's error
            log.error("shutdown: closing failed", what=what, error=f"{type(error).__name__}: {error}")

    def health(self, *, ready: bool = False) -> dict[str, Any]:
        """Liveness (no stream lost, Pub/Sub answering) or, with `ready`, readiness (also still pulling)."""
        pools = [pool.health() for pool in self.pools]
        good = all(p["ready"] if ready else p["ok"] for p in pools)
        return {"status": "ok" if good else "unavailable", "pools": pools}


async def start_probe_server(service: ConsumerService, port: int, host: str) -> metrics.MetricsServer:
    """/metrics, plus /health (liveness: no stream lost, Pub/Sub answering) and /ready (also pulling, not
    shutting down). Both answer 503 with each pool's stream state when not."""
    from aiohttp import web

    def probe(ready: bool) -> Any:
        async def handler(_: web.Request) -> web.Response:
            body = service.health(ready=ready)
            return web.json_response(body, status=200 if body["status"] == "ok" else 503)
        return handler

    app = web.Application()
    app.router.add_get("/metrics", metrics.metrics_handler)
    app.router.add_get("/health", probe(False))
    app.router.add_get("/ready", probe(True))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []  # noqa: SLF001 - the bound port when port=0
    bound = sockets[0].getsockname()[1] if sockets else port
    return metrics.MetricsServer(runner, host, bound)
