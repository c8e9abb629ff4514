"""`convergence publish run ORG PIPELINE [--param k=v ...] [--json FILE] [--wait] [--from DATE --to DATE]`.

Builds the run request with publisher.RequestPublisher (the same checks the consumer applies: a request
it would refuse is refused here, exit 2), publishes it and prints the run_id. With --wait it follows the
run's events on a temporary subscription and shows each step (rows, duration); on a terminal, also a
progress bar. Backfill: --from/--to publish one run per day (trigger backfill, the day in --date-param
parameters, default start_date and end_date) and follow them all.

Exit codes: 0 published (or, with --wait, every run succeeded); 1 a run FAILED, TIMEOUT, REJECTED or
DEAD_LETTERED; 2 invalid input (nothing published); 3 --wait timed out before a run finished.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import click

from convergence.commands.output import complete_pipelines

EXIT_INVALID = 2
MAX_BACKFILL_DAYS = 366


def parse_param(text: str) -> tuple[str, Any]:
    """k=v; v is typed when it reads as a JSON number, true, false or null, else it is the string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not k=v", param_hint="--param")
    try:
        value = json.loads(raw)
    except ValueError:
        return key, raw
    return (key, value) if value is None or isinstance(value, bool | int | float) else (key, raw)


def load_json_parameters(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, ValueError) as error:
        raise click.BadParameter(f"{path}: {error}", param_hint="--json") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: must hold a JSON object of parameters", param_hint="--json")
    return data


def backfill_days(start: date | None, end: date | None) -> list[date]:
    if start is None and end is None:
        return []
    if start is None or end is None:
        raise click.UsageError("--from and --to go together")
    if end < start:
        raise click.UsageError(f"--to {end} is before --from {start}")
    count = (end - start).days + 1
    if count > MAX_BACKFILL_DAYS:
        raise click.UsageError(f"{count} days: a backfill covers at most {MAX_BACKFILL_DAYS} days per call")
    return [start + timedelta(days=n) for n in range(count)]


def _invalid(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_INVALID)


@click.group()
def publish() -> None:
    """Publish run requests to the pipeline-requests topic."""


@publish.command()
@click.argument("org")
@click.argument("pipeline", shell_complete=complete_pipelines)
@click.option("--param", "params", multiple=True, metavar="K=V", help="A run parameter (repeatable).")
@click.option("--params-file", "json_file", default=None, metavar="FILE",
              help="A JSON object of parameters ('-' for stdin); --param wins on the same key.")
@click.option("--json", "old_json_file", default=None, metavar="FILE", hidden=True,
              help="Old name of --params-file.")
@click.option("--wait", is_flag=True, help="Follow the run(s) and exit non-zero unless all succeed.")
@click.option("--timeout", type=click.FloatRange(min=1), default=1800.0, show_default=True,
              help="Seconds --wait waits before giving up (exit 3).")
@click.option("--from", "from_", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Backfill: first day.")
@click.option("--to", "to", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Backfill: last day.")
@click.option("--date-param", "date_params", multiple=True, metavar="NAME",
              help="Backfill: parameter(s) set to each day (default: start_date and end_date; e.g. date).")
@click.option("--run-id", default=None, help="Use this run_id (single run only): the same run_id runs once.")
@click.option("--skip-config-check", is_flag=True, help="Do not check that the pipeline exists under configs/.")
def run(org: str, pipeline: str, params: tuple[str, ...], json_file: str | None, old_json_file: str | None,
        wait: bool, timeout: float, from_: Any, to: Any, date_params: tuple[str, ...], run_id: str | None,
        skip_config_check: bool) -> None:
    """Run PIPELINE (provider/domain/name; domain may be empty: anthropic//usage_cost) for ORG."""
    from convergence.cli import load_settings_or_exit
    from convergence.observability.tracing import new_trace_id
    from convergence.pipeline import ConfigError, PipelineLoader
    from convergence.schemas import MessageRejected, RunRequest, Trigger

    if old_json_file is not None:
        if json_file is not None:
            raise click.UsageError("--json is the old name of --params-file: give one of them")
        click.echo("convergence: --json FILE is now --params-file FILE (--json will go)", err=True)
        json_file = old_json_file
    parameters: dict[str, Any] = load_json_parameters(json_file) if json_file else {}
    parameters.update(dict(parse_param(p) for p in params))
    days = backfill_days(from_.date() if from_ else None, to.date() if to else None)
    if days and run_id:
        raise click.UsageError("--run-id is for a single run, not a backfill")
    names = list(date_params) or ["start_date", "end_date"]

    try:
        if days:
            requests = backfill_requests(org, pipeline, days, parameters, names)
        else:
            requests = [RunRequest.create(org, pipeline, parameters, Trigger.ADHOC, requested_by="convergence-cli",
                                          run_id=run_id, trace_id=new_trace_id())]
    except MessageRejected as error:
        _invalid(f"{error.code.value}: {error}")
    settings = load_settings_or_exit()
    if not skip_config_check:
        try:
            PipelineLoader(settings.configs_dir).load(pipeline)
        except ConfigError as error:
            _invalid(f"{error.code}: {error}")
    labels = {request.run_id: (request.parameters.get(names[0]) if days else request.run_id) for request in requests}
    code = publish_requests(settings, org, pipeline, requests, labels, wait=wait, timeout=timeout,
                            backfill=bool(days))
    if wait:
        sys.exit(code)


def backfill_requests(org: str, pipeline: str, days: list[date], parameters: dict[str, Any], names: list[str],
                      run_id: Callable[[date], str | None] | None = None) -> list[Any]:
    """One BACKFILL request per day, the day in each of `names`; `run_id(day)` fixes a run's id (the same
    id runs once: the consumer skips a run_id that already succeeded). Raises MessageRejected."""
    from convergence.observability.tracing import new_trace_id
    from convergence.schemas import RunRequest, Trigger

    return [RunRequest.create(org, pipeline, {**parameters, **dict.fromkeys(names, day.isoformat())},
                              Trigger.BACKFILL, requested_by="convergence-cli",
                              run_id=run_id(day) if run_id else None, trace_id=new_trace_id())
            for day in days]


def publish_requests(settings: Any, org: str, pipeline: str, requests: list[Any], labels: dict[str, Any], *,
                     wait: bool, timeout: float, backfill: bool) -> int:
    """Publish the requests and print their run_ids; with `wait`, follow them (subscribed before publishing)
    and return the exit code of their outcome, else 0. A publish failure exits 1."""
    from convergence.publisher.requests import PublishError, RequestPublisher

    code = 0
    with contextlib.ExitStack() as stack:
        follower = None
        if wait:  # subscribed before publishing: a subscription only gets what is published after it exists
            from google.api_core.exceptions import NotFound

            from convergence.publisher.follow import RunFollower

            single = requests[0].run_id if len(requests) == 1 else None
            try:
                follower = stack.enter_context(RunFollower(settings, run_id=single, org_slug=org, pipeline=pipeline))
            except NotFound as error:
                raise click.ClickException(f"cannot follow: {error.message} (topic {settings.events_topic}; "
                                           "`convergence infra apply` creates it). Nothing was published.") from None
        with RequestPublisher(settings) as publisher:
            try:
                publisher.publish_many(requests)
            except PublishError as error:
                click.echo(f"error: {error}", err=True)
                for failed in error.failed:
                    click.echo(f"not published: {failed}", err=True)
                sys.exit(1)
        for request in requests:
            trigger = f" ({request.trigger}, {labels[request.run_id]})" if backfill else ""
            click.echo(f"published {request.run_id}{trigger}")
        if follower is not None:
            code = _follow(follower, requests, labels, settings, timeout)
    return code


def _follow(follower: Any, requests: list[Any], labels: dict[str, Any], settings: Any, timeout: float) -> int:
    from convergence.publisher.follow import Final, ProgressPrinter, exit_code, run_log_check
    from convergence.runtime import Services

    for request in requests:
        follower.expect(request.run_id, str(labels[request.run_id]))
    printer = ProgressPrinter(follower, sys.stdout)
    printer.redraw()
    services = Services(settings)
    try:
        runs = follower.wait(timeout, on_event=printer, check_done=run_log_check(services.runlog), tick=printer.redraw)
    finally:
        printer.finish()
        services.close()
    finals = [run.final for run in runs.values()]
    counts = {final: finals.count(final) for final in Final if finals.count(final)}
    summary = ", ".join(f"{count} {final}" for final, count in counts.items())
    for run in runs.values():
        if run.final is Final.WAIT_TIMEOUT:
            click.echo(f"{run.label}: no end within {timeout:.0f}s (still running or queued; the run goes on)",
                       err=True)
    click.echo(f"{len(runs)} run(s): {summary}")
    return exit_code(runs.values())
