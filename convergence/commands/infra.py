"""`convergence infra apply`: topics and subscriptions, idempotently, on the emulator or a project."""

from __future__ import annotations

import sys

import click


@click.group()
def infra() -> None:
    """Pub/Sub topology (topics, subscriptions, dead-letter and retry policies)."""


@infra.command()
def apply() -> None:
    """Create or update the topology from settings; prints what changed and what could not be."""
    from convergence.cli import load_settings_or_exit
    from convergence.infra.apply import apply as apply_topology
    from convergence.infra.topology import Topology, TopologyError

    settings = load_settings_or_exit()
    try:
        topology = Topology.from_settings(settings)
    except TopologyError as error:
        raise click.ClickException(str(error)) from None
    report = apply_topology(topology, settings)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        sys.exit(1)
