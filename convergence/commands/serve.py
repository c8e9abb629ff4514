"""`convergence serve`: the push endpoint, probes (and the HTTP run door) on one aiohttp server."""

from __future__ import annotations

import asyncio

import click


@click.command()
@click.option("--host", default=None, help="Listen address (default HTTP_HOST).")
@click.option("--port", type=int, default=None, help="Listen port (default HTTP_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Serve Pub/Sub push deliveries and the HTTP API."""
    from settings.production import validate_for_startup

    from consumer.handler import RunHandler
    from consumer.http_app import Lifecycle, create_app, run_server
    from convergence.cli import load_settings_or_exit
    from pipeline import PipelineLoader
    from runtime import Services

    settings = load_settings_or_exit()
    validate_for_startup(settings)
    services = Services(settings)

    async def hand_off(data: bytes, attributes) -> None:
        # Runs too long for a push request go to the pull side, same run_id.
        await asyncio.wrap_future(services.handoff.publish_raw(data, dict(attributes)))

    handler = RunHandler(services=services, loader=PipelineLoader(settings.configs_dir),
                         notify=services.notifier, hand_off=hand_off)

    async def close() -> None:
        await asyncio.to_thread(services.close)
        await services.aclose()

    app = create_app(settings, handler, lifecycle=[Lifecycle(cleanup=close)])
    asyncio.run(run_server(app, host, port))
