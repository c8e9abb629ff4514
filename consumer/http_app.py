"""The HTTP side of the service (`convergence serve`): the aiohttp app, its lifecycle, and the server loop.

Lifecycle, in aiohttp's order (each resource is one of the app's cleanup contexts):
- startup: the OIDC certs session, then each `Lifecycle.startup` (open the handler's clients); if one fails,
  those already open are closed.
- SIGTERM/SIGINT: the listening socket closes; `shutdown` hooks run (tell the handler to start no new
  runs: it answers SHUTTING_DOWN -> 503); in-flight requests get `shutdown_grace_seconds` to finish,
  then are cancelled (the connection drops: Pub/Sub nacks and redelivers); `cleanup` hooks close the
  clients, in reverse order.

/health is liveness (200 while the process serves). /ready is readiness: 200 once started, not shutting
down, and the optional readiness check says yes.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog
from aiohttp import web

from convergence.consumer.oidc import PushTokenVerifier
from convergence.consumer.push import MessageHandler, PushEndpoint, push_budget_seconds
from convergence.httpclient import AddressGuard
from convergence.observability.metrics import metrics_handler
from convergence.settings.model import Settings

log = structlog.get_logger(__name__)

Readiness = Callable[[], Awaitable[bool]]
Hook = Callable[[], Awaitable[None]]

PUSH_PATH = "/pubsub/push"
READINESS_TIMEOUT_SECONDS = 5.0


class PushConfigError(RuntimeError):
    """The push endpoint cannot be served safely with these settings."""


@dataclass(frozen=True)
class Lifecycle:
    """Hooks for a resource the handler needs (clients, pools). Each one is optional."""

    startup: Hook | None = None   # before the first request
    shutdown: Hook | None = None  # SIGTERM: stop starting new work; in-flight requests still finish
    cleanup: Hook | None = None   # after the last request: close clients


@dataclass
class ServingState:
    started: bool = False
    shutting_down: bool = False


SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("serving_state", ServingState)
PUSH = web.AppKey("push_endpoint", PushEndpoint)


class Probes:
    """/health and /ready."""

    def __init__(self, state: ServingState, readiness: Readiness | None) -> None:
        self.state = state
        self.readiness = readiness

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(self, _: web.Request) -> web.Response:
        reason = await self._not_ready_reason()
        if reason is None:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not_ready", "reason": reason}, status=503)

    async def _not_ready_reason(self) -> str | None:
        if self.state.shutting_down:
            return "shutting_down"
        if not self.state.started:
            return "starting"
        if self.readiness is None:
            return None
        try:
            async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
                ready = await self.readiness()
        except Exception as error:  # noqa: BLE001 - a failing check means "not ready", not a 500
            log.warning("readiness check failed", error=f"{type(error).__name__}: {error}")
            return "check_failed"
        return None if ready else "dependencies_not_ready"


def create_app(settings: Settings, handler: MessageHandler, readiness: Readiness | None = None, *,
               lifecycle: Sequence[Lifecycle] = ()) -> web.Application:
    """The push/probe app. Raises PushConfigError when push could not be verified safely."""
    verifier = build_verifier(settings)
    # The push subscription's ack deadline is also the push request timeout.
    budget = push_budget_seconds(settings.push_ack_deadline_seconds, settings.push_deadline_margin_seconds)
    endpoint = PushEndpoint(
        handler,
        budget_seconds=budget,
        max_body_bytes=settings.push_max_body_bytes,
        verifier=verifier,
    )
    state = ServingState()
    app = web.Application(client_max_size=settings.push_max_body_bytes)
    app[SETTINGS] = settings
    app[STATE] = state
    app[PUSH] = endpoint
    hooks = list(lifecycle)
    if verifier is not None:  # first up, last down
        hooks.insert(0, Lifecycle(startup=verifier.start, cleanup=verifier.close))
    _register_lifecycle(app, state, endpoint, hooks)
    register_routes(app, endpoint, Probes(state, readiness))
    return app


def register_routes(app: web.Application, push: PushEndpoint, probes: Probes) -> None:
    """Every route of the service, in one place (the run door and /metrics go here too)."""
    app.router.add_get("/health", probes.health)
    app.router.add_get("/ready", probes.ready)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_post(PUSH_PATH, push.handle)


def build_verifier(settings: Settings) -> PushTokenVerifier | None:
    if not settings.push_verify_token:
        if settings.is_production:
            raise PushConfigError(
                "PUSH_VERIFY_TOKEN=false is refused in production: the push endpoint would run any "
                "request from anyone. Set PUSH_AUDIENCE and PUSH_SERVICE_ACCOUNT_EMAIL instead."
            )
        log.warning("push token verification is OFF (allowed outside production only)",
                    environment=settings.environment.value)
        return None
    # Pub/Sub's default OIDC audience is the push endpoint URL (infra leaves it unset unless asked).
    audience = settings.push_audience or settings.push_endpoint
    email = settings.push_service_account_email
    missing = [name for name, value in (("PUSH_AUDIENCE (or PUSH_ENDPOINT)", audience),
                                        ("PUSH_SERVICE_ACCOUNT_EMAIL", email)) if not value]
    if missing or not audience or not email:
        raise PushConfigError(
            f"push token verification needs {' and '.join(missing)} (the push subscription's OIDC "
            "audience and service account); set PUSH_VERIFY_TOKEN=false only outside production"
        )
    guard = AddressGuard(enabled=settings.is_production, allowed_hosts=frozenset(settings.outbound_allowed_hosts))
    return PushTokenVerifier(audience, email, certs_url=settings.push_certs_url, guard=guard)


def _register_lifecycle(app: web.Application, state: ServingState, endpoint: PushEndpoint,
                        hooks: Sequence[Lifecycle]) -> None:
    """Each resource is one aiohttp cleanup context: opened in order, closed in reverse, and when one fails
    to open, the ones already open are closed (aiohttp runs the cleanup halves of those that started)."""

    def context(hook: Lifecycle) -> Callable[[web.Application], AsyncIterator[None]]:
        async def resource(_: web.Application) -> AsyncIterator[None]:
            if hook.startup:
                await hook.startup()
            yield
            if hook.cleanup:
                try:
                    await hook.cleanup()
                except Exception:  # noqa: BLE001 - keep closing the others
                    log.exception("cleanup hook failed")

        return resource

    for hook in hooks:
        app.cleanup_ctx.append(context(hook))

    async def on_startup(_: web.Application) -> None:  # after every cleanup context has opened
        state.started = True
        log.info("http app started")

    async def on_shutdown(_: web.Application) -> None:
        state.shutting_down = True
        endpoint.stop_accepting()
        for hook in hooks:
            if hook.shutdown:
                await hook.shutdown()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)


async def run_server(app: web.Application, host: str | None = None, port: int | None = None, *,
                     stop: asyncio.Event | None = None, handle_signals: bool = True) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set), then shut down gracefully and return.

    Host and port default to the app's settings; so does the grace period (`shutdown_grace_seconds`).
    Signal handlers need the main thread; pass `handle_signals=False` elsewhere and set `stop`.
    """
    settings = app[SETTINGS]
    host = settings.http_host if host is None else host
    port = settings.http_port if port is None else port
    stop = stop or asyncio.Event()
    runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_grace_seconds, handle_signals=False,
                           access_log=None)
    await runner.setup()  # runs on_startup
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    try:
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("http server listening", host=host, port=port)
        await stop.wait()
        log.info("http server stopping", grace_seconds=settings.shutdown_grace_seconds)
    finally:
        await runner.cleanup()  # stop listening, on_shutdown, wait for in-flight requests, on_cleanup
        for sig in signals:
            loop.remove_signal_handler(sig)
        log.info("http server stopped")
