"""`convergence schedule tick [--at TIME]`: what a Cloud Scheduler tick does, by hand (local cron, catch-up).

`schedule due [--at TIME]` lists the pipeline slots due in the tick's window without touching BigQuery or
Pub/Sub. A tick is idempotent: run it twice and the second publishes nothing (deterministic run_ids and
the ledger in org_pipeline_execution_queue).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta

import click

from convergence.commands.output import output_options


def parse_time(value: str | None) -> datetime:
    """ISO time (UTC unless it says otherwise), or now; whole minutes, like a tick's publish time."""
    if value is None:
        moment = datetime.now(UTC)
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an ISO time (e.g. 2026-03-01T05:00Z)",
                                     param_hint="--at") from None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


_at_option = click.option("--at", "at", default=None, metavar="TIME",
                          help="Tick time, ISO 8601 (default: now, UTC). Covers (TIME - window, TIME].")
_window_option = click.option("--window-minutes", type=click.IntRange(1, 7 * 24 * 60), default=None,
                              help="Window the tick covers (default TICK_WINDOW_MINUTES).")


@click.group()
def schedule() -> None:
    """Scheduled pipelines: fan a tick out into run requests."""


@schedule.command()
@_at_option
@_window_option
@click.option("--dry-run", is_flag=True, help="Count what would be published (still reads BigQuery).")
@output_options
def tick(at: str | None, window_minutes: int | None, dry_run: bool, as_json: bool) -> None:
    """Publish one run request per (eligible org, due pipeline) for the tick at TIME."""
    from convergence.cli import load_settings_or_exit
    from convergence.pipeline import PipelineLoader
    from convergence.publisher.fanout import TickFanOut
    from convergence.publisher.ledger import ExecutionLedger
    from convergence.publisher.requests import PublishError
    from convergence.runtime import Services
    from convergence.tenancy.eligibility import EligibleOrgs
    from convergence.tenancy.pipeline_configs import OrgConfigReader

    moment = parse_time(at)
    settings = load_settings_or_exit()
    services = Services(settings)
    window = timedelta(minutes=window_minutes or settings.tick_window_minutes)
    fanout = TickFanOut(PipelineLoader(settings.configs_dir), services.requests,
                        EligibleOrgs(services.bigquery, settings), ExecutionLedger(services.bigquery, settings),
                        interval=window, org_configs=OrgConfigReader(services.bigquery, settings))
    try:
        report = fanout.fan_out(moment, dry_run=dry_run)
    except PublishError as error:
        click.echo(f"error: {error}; run the same tick again to publish the rest", err=True)
        sys.exit(1)
    finally:
        services.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    for pipeline, slot in report.due:
        click.echo(f"due      {slot}  {pipeline}")
    for integration, count in sorted(report.orgs.items()):
        click.echo(f"eligible {count:>6} org(s)  integration {integration}")
    for pipeline, count in sorted(report.published_by_pipeline.items()):
        click.echo(f"{'would publish' if dry_run else 'published':<9}{count:>6}  {pipeline}")
    click.echo(report.summary())


@schedule.command()
@_at_option
@_window_option
def due(at: str | None, window_minutes: int | None) -> None:
    """List the pipeline slots due in the tick's window (no BigQuery, no Pub/Sub)."""
    from convergence.cli import load_settings_or_exit
    from convergence.pipeline import PipelineLoader
    from convergence.publisher.fanout import TickFanOut

    moment = parse_time(at)
    settings = load_settings_or_exit()
    window = timedelta(minutes=window_minutes or settings.tick_window_minutes)
    fanout = TickFanOut(PipelineLoader(settings.configs_dir), None, lambda _: [], None, interval=window)  # type: ignore[arg-type]
    runs = fanout.due(moment)
    for run in runs:
        click.echo(f"{run.slot_text}  {run.pipeline:<45} integration={run.integration or '-'}  "
                   f"parameters={json.dumps(run.parameters, sort_keys=True)}")
    click.echo(f"{len(runs)} due slot(s) in ({(moment - window):%Y-%m-%dT%H:%MZ}, {moment:%Y-%m-%dT%H:%MZ}]")
