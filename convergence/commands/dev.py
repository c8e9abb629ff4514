"""`convergence dev`: the embedded local stack for trying things out (filled in as the stack grows)."""

from __future__ import annotations

import click


@click.group(invoke_without_command=True)
@click.pass_context
def dev(ctx: click.Context) -> None:
    """Local development: emulators, demo org, demo runs."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
