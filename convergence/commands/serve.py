"""`convergence serve`: the push endpoint, probes (and the HTTP run door) on one aiohttp server."""

from __future__ import annotations

import asyncio

import click


@click.command()
@click.option("--host", default=None, help="Listen address (default HTTP_HOST).")
@click.option("--port", type=int, default=None, help="Listen port (default HTTP_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Serve Pub/Sub push deliveries and the HTTP API."""
    from convergence.api import ApiDoor
    from convergence.cli import load_settings_or_exit
    from convergence.console import Console
    from convergence.consumer.http_app import PushConfigError, run_server
    from convergence.consumer.serving import build_push_app
    from convergence.runtime import Services
    from convergence.runtime.startup import StartupError, check_startup
    from convergence.settings.production import validate_for_startup

    settings = load_settings_or_exit()
    validate_for_startup(settings)
    services = Services(settings)
    try:
        app = build_push_app(settings, services)
    except PushConfigError as error:
        raise StartupError([str(error)]) from None
    # Pub/Sub and BigQuery answer, credentials work: else exit 2 now, not a traceback at the first request.
    check_startup(settings, subscription=None, topic=settings.events_topic)
    ApiDoor(settings, services).register(app)  # the HTTP run door: /api/v1/... (convergence/api/door.py)
    Console(settings, services).register(app)  # the read-only web console: /console (convergence/console)
    asyncio.run(run_server(app, host, port))
