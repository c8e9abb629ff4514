"""`convergence`: one CLI for every job (consume, serve, publish, schedule, infra, bootstrap, validate,
procedures, dlq, runs, dev). Each command is a thin shell over a library call."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from convergence.settings import SettingsError, get_settings


def load_settings_or_exit():
    try:
        return get_settings()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Convergence: cloud, LLM and SaaS usage into cost data in BigQuery, driven by Pub/Sub."""
    settings = load_settings_or_exit()
    from convergence.observability.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format, settings.gcp_project_id)


@cli.command()
@click.argument("path", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
def validate(path: Path | None) -> None:
    """Check every pipeline under configs/: models, DAG, processors, referenced files."""
    from convergence.pipeline import ProcessorRegistry
    from convergence.pipeline.validation import validate_tree

    settings = load_settings_or_exit()
    root = path or settings.configs_dir
    count, problems = validate_tree(root, ProcessorRegistry(settings.processor_packages))
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {count} pipeline(s) under {root}", err=True)
        sys.exit(1)
    click.echo(f"ok: {count} pipeline(s) under {root}")


def _add_command_groups() -> None:
    # Command modules keep heavy imports (google clients) inside their functions: `--help` stays fast.
    from convergence.commands import all_commands

    for command in all_commands():
        cli.add_command(command)


def main() -> None:
    _add_command_groups()
    cli(prog_name="convergence")
