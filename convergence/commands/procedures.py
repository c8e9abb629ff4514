"""`convergence procedures list|files|sync [--force]|get NAME|put NAME|delete NAME`:
stored procedures kept in `configs/system/procedures/{domain}/*.sql`, synced to BigQuery
routines in the central dataset (or `--dataset`). `sync` re-creates only the procedures whose SQL changed.

Wire-up: `cli.add_command(procedures)` (the module keeps google imports inside the commands).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from convergence.commands.output import output_options


def _catalog(dataset: str | None) -> Any:
    from convergence.cli import load_settings_or_exit
    from convergence.warehouse.catalog import ProcedureCatalog
    from convergence.warehouse.client import make_client

    settings = load_settings_or_exit()
    return ProcedureCatalog(make_client(settings), settings, dataset)


def _run(action: Any) -> Any:
    from convergence.pipeline.errors import StepError

    try:
        return action()
    except StepError as error:
        raise click.ClickException(f"{error.code}: {error}") from None


def _echo(value: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(value, indent=2, default=str))


_dataset_option = click.option("--dataset", default=None, help="Dataset of the routines (default: the central one).")
_json_option = output_options


@click.group()
def procedures() -> None:
    """Stored procedures: SQL files under configs/system/procedures <-> BigQuery routines."""


@procedures.command("list")
@_dataset_option
@_json_option
def list_(dataset: str | None, as_json: bool) -> None:
    """Procedures in BigQuery, and whether each matches its file."""
    items = _run(lambda: _catalog(dataset).list())
    if as_json:
        _echo(items, True)
        return
    for item in items:
        state = "no file" if not item["has_file"] else ("in sync" if item["in_sync"] else "differs from its file")
        click.echo(f"{item['name']:<50} {item['type'] or '':<10} {state}")
    click.echo(f"{len(items)} routine(s)")


@procedures.command()
@_json_option
def files(as_json: bool) -> None:
    """Procedure SQL files available for sync."""
    from convergence.cli import load_settings_or_exit
    from convergence.warehouse.catalog import procedure_files

    items = _run(lambda: [f.describe() for f in procedure_files(load_settings_or_exit().configs_dir)])
    if as_json:
        _echo(items, True)
        return
    for item in items:
        click.echo(f"{item['name']:<50} {item['file']}  sha256:{item['sha256'][:12]}")
    click.echo(f"{len(items)} file(s)")


@procedures.command()
@click.option("--force", is_flag=True, help="Re-create every procedure, changed or not.")
@_dataset_option
@_json_option
def sync(force: bool, dataset: str | None, as_json: bool) -> None:
    """Create missing procedures and re-create changed ones (all with --force)."""
    report = _run(lambda: _catalog(dataset).sync(force=force))
    if as_json:
        _echo(report, True)
    else:
        for key in ("created", "updated", "unchanged", "failed", "without_file"):
            for name in report[key]:
                click.echo(f"{key:<13} {name}")
        click.echo(", ".join(f"{len(report[k])} {k}" for k in ("created", "updated", "unchanged", "failed")))
    if report["failed"]:
        sys.exit(1)


@procedures.command()
@click.argument("name")
@_dataset_option
def get(name: str, dataset: str | None) -> None:
    """A procedure's arguments, body and recorded file hash."""
    _echo(_run(lambda: _catalog(dataset).get(name)), True)


@procedures.command()
@click.argument("name")
@_dataset_option
def put(name: str, dataset: str | None) -> None:
    """Create or replace one procedure from its file."""
    result = _run(lambda: _catalog(dataset).put(name))
    click.echo(f"created {name} from {result['file']} (sha256:{result['sha256'][:12]})")


@procedures.command()
@click.argument("name")
@_dataset_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete(name: str, dataset: str | None, yes: bool) -> None:
    """Delete a procedure (its file stays)."""
    if not yes:
        click.confirm(f"delete procedure {name}?", abort=True)
    if _run(lambda: _catalog(dataset).delete(name)):
        click.echo(f"deleted {name}")
    else:
        raise click.ClickException(f"procedure {name} does not exist")
