"""`convergence`: one CLI for every job (consume, serve, publish, schedule, infra, bootstrap, validate,
procedures, dlq, runs, dev). Each command is a thin shell over a library call."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from convergence.settings import SettingsError, get_settings

# Exit code of a process that could not start (settings, credentials, an endpoint that does not answer).
EXIT_CANNOT_START = 2


def load_settings_or_exit():
    """The settings; a SettingsError reaches main(), which lists its problems and exits 2."""
    return get_settings()


# Commands that check their endpoints at start-up themselves (consume, serve) or run the local stack (dev).
LONG_RUNNING_COMMANDS = frozenset({"consume", "serve", "dev"})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Convergence: cloud, LLM and SaaS usage into cost data in BigQuery, driven by Pub/Sub."""
    settings = load_settings_or_exit()
    from convergence.observability.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format, settings.gcp_project_id)
    if ctx.invoked_subcommand not in LONG_RUNNING_COMMANDS:
        # A one-shot command asks BigQuery once, briefly, before its first call: the calls themselves retry
        # an endpoint that does not answer for minutes.
        from convergence.runtime.startup import check_bigquery_answers
        from convergence.warehouse.client import check_before_first_use

        ctx.with_resource(check_before_first_use(check_bigquery_answers))


@cli.command()
@click.argument("path", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
def validate(path: Path | None) -> None:
    """Check every pipeline under configs/: models, DAG, processors, referenced files, and every SQL the
    configs carry (Google's SQL front end, against the configs' table schemas)."""
    from convergence.pipeline import ProcessorRegistry
    from convergence.pipeline.validation import deprecation_notes, validate_tree
    from convergence.tenancy.providers import provider_registry_problems
    from convergence.warehouse.config_sql import SqlNames, check_sql

    settings = load_settings_or_exit()
    root = path or settings.configs_dir
    count, problems = validate_tree(root, ProcessorRegistry(settings.processor_packages))
    for deprecated in deprecation_notes(root):
        click.echo(f"deprecated: {deprecated}", err=True)
    sql = check_sql(root, SqlNames.from_settings(settings))
    problems = [*problems, *sql.problems, *provider_registry_problems(root)]
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    for note in sql.notes:
        click.echo(f"note: {note}", err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {count} pipeline(s) under {root}", err=True)
        click.echo(sql.summary(), err=True)
        sys.exit(1)
    click.echo(f"ok: {count} pipeline(s) under {root}")
    click.echo(sql.summary())


def _add_command_groups() -> None:
    # Command modules keep heavy imports (google clients) inside their functions: `--help` stays fast.
    from convergence.commands import all_commands

    for command in all_commands():
        cli.add_command(command)


def cannot_start_problems(error: BaseException) -> list[str] | None:
    """The problems behind an error that means the command could not start; None for any other error.

    The one place that decides what ends in "cannot start" and exit 2, for every command."""
    import pydantic_settings
    import requests
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    from convergence.runtime.startup import StartupError, credentials_problem

    if isinstance(error, SettingsError):
        lines = str(error).splitlines()
        return [line[4:] for line in lines if line.startswith("  - ")] or lines[:1] or ["invalid settings"]
    if isinstance(error, pydantic_settings.SettingsError):  # a list or mapping setting that is not JSON
        field = re.search(r'field "([^"]+)"', str(error))
        name = field.group(1).upper() if field else "a setting"
        return [f'{name}: not valid JSON (a list is written ["a", "b"])']
    if isinstance(error, StartupError):
        return error.problems
    if isinstance(error, auth_exceptions.GoogleAuthError | api_exceptions.Unauthenticated):
        return [credentials_problem(error)]
    if isinstance(error, api_exceptions.RetryError | api_exceptions.ServiceUnavailable
                  | api_exceptions.DeadlineExceeded | ConnectionError | requests.exceptions.ConnectionError
                  | requests.exceptions.Timeout):
        cause = getattr(error, "cause", None) or error
        return [f"a Google API did not answer: {type(cause).__name__}: {str(cause).strip()[:300]}"]
    if isinstance(error, api_exceptions.NotFound):  # a dataset, table or topic the command reads is missing
        return [f"not found: {_first_line(error)} (`convergence bootstrap` creates the central dataset and "
                "tables, `convergence infra apply` the Pub/Sub topology)"]
    if isinstance(error, api_exceptions.Forbidden):
        return [f"permission denied: {_first_line(error)} (the identity running this command needs the roles "
                "deploy/terraform grants)"]
    return None


def _first_line(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error)
    return str(message).strip().splitlines()[0][:300] if str(message).strip() else type(error).__name__


def main() -> None:
    _add_command_groups()
    try:
        cli(prog_name="convergence")
    except Exception as error:
        problems = cannot_start_problems(error)
        if problems is None:
            raise
        from convergence.runtime.startup import scrub

        click.echo("convergence: cannot start:", err=True)
        for problem in problems:
            click.echo(f"  - {scrub(problem)}", err=True)
        sys.exit(EXIT_CANNOT_START)
