"""`convergence consume`: run the worker pool until SIGTERM."""

from __future__ import annotations

import asyncio

import click


@click.command()
@click.option("--no-dead-letters", is_flag=True, help="Do not drain the dead-letter subscription here.")
def consume(no_dead_letters: bool) -> None:
    """Pull run requests (and dead letters) and run their pipelines."""
    from convergence.cli import load_settings_or_exit
    from convergence.runtime.startup import check_startup
    from convergence.settings.production import validate_for_startup

    settings = load_settings_or_exit()
    validate_for_startup(settings)
    # Pub/Sub and BigQuery answer, credentials work: else exit 2 now rather than retry forever.
    check_startup(settings, subscription=[settings.requests_subscription, settings.overflow_subscription],
                  topic=settings.events_topic)

    from convergence.consumer.service import ConsumerService
    from convergence.runtime import Services

    services = Services(settings)
    service = ConsumerService(settings, services, notify=services.notifier,
                              with_dead_letters=not no_dead_letters)
    raise SystemExit(asyncio.run(service.run()))  # 1: a stream was lost, the platform restarts us
