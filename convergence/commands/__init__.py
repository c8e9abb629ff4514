"""CLI command groups, one module per job. Modules import heavy clients inside their functions."""

from __future__ import annotations

import click


def all_commands() -> list[click.Command]:
    from convergence.commands.bootstrap import bootstrap
    from convergence.commands.consume import consume
    from convergence.commands.costs import costs
    from convergence.commands.credentials import credentials
    from convergence.commands.dev import dev
    from convergence.commands.dlq import dlq
    from convergence.commands.focus import focus
    from convergence.commands.infra import infra
    from convergence.commands.notify import notify
    from convergence.commands.orgs import orgs
    from convergence.commands.pipelines import pipelines
    from convergence.commands.procedures import procedures
    from convergence.commands.publish import publish
    from convergence.commands.runs import runs
    from convergence.commands.schedule import schedule
    from convergence.commands.serve import serve

    return [bootstrap, consume, costs, credentials, dev, dlq, focus, infra, notify, orgs, pipelines, procedures,
            publish, runs, schedule, serve]
