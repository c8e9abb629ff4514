"""`convergence bootstrap`: the central dataset and its tables, idempotently."""

from __future__ import annotations

import sys

import click


@click.command()
def bootstrap() -> None:
    """Create or update the central `organizations` dataset and its 14 tables."""
    from convergence.cli import load_settings_or_exit
    from convergence.runtime import Services
    from convergence.warehouse.bootstrap import bootstrap as run_bootstrap
    from convergence.warehouse.bootstrap import report_lines

    settings = load_settings_or_exit()
    report = run_bootstrap(Services(settings).bigquery, settings)
    for line in report_lines(report):
        click.echo(line)
    if not report.ok:
        sys.exit(1)
