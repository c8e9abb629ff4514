"""`convergence runs list|show|gaps`: the run log and step logs (BigQuery) as readable tables, and the
days a pipeline has no successful run for (`gaps`, with `--fill` to backfill them).

With --org, only that org's runs are read (the org is a query parameter of every statement), so another
org's run is reported "not found for org X", exactly like a run that does not exist: never shown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import click

from convergence.commands.output import complete_pipelines, output_options

# DEAD_LETTERED is not a run status: the dead-letter drain records FAILED with that reason code.
STATUSES = ("RUNNING", "SUCCESS", "FAILED", "TIMEOUT", "REJECTED", "DEAD_LETTERED")
_SINCE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.I)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
ERROR_WIDTH = 70


# -- parsing -----------------------------------------------------------------------------------------------
def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`30m`, `12h`, `1d`, `2w` (before now), or an ISO date / date-time (UTC when no offset is given)."""
    now = now or datetime.now(UTC)
    match = _SINCE.fullmatch(value)
    if match:
        return now - timedelta(**{_UNITS[match[2].lower()]: int(match[1])})
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = datetime.combine(date.fromisoformat(value.strip()), datetime.min.time())
        except ValueError:
            raise ValueError(f"{value!r} is not a duration (30m, 12h, 1d, 2w) or an ISO date/time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _since_option(_: click.Context, __: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _org_option(_: click.Context, __: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug

    try:
        return validate_org_slug(value)
    except InvalidIdentifier as error:
        raise click.BadParameter(str(error)) from None


# -- formatting --------------------------------------------------------------------------------------------
def format_duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_time(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def format_error(code: str | None, message: str | None, width: int = ERROR_WIDTH) -> str:
    if not code and not message:
        return ""
    text = " ".join(f"{code or ''}: {message or ''}".split()) if message else str(code)
    return text if len(text) <= width else text[: width - 3] + "..."


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return " ".join(str(value).split())  # one line per row, whatever the message contains


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


RUN_HEADERS = ("RUN_ID", "ORG", "STATUS", "PIPELINE", "TRIGGER", "ATTEMPT", "STARTED", "DURATION", "ROWS", "ERROR")
STEP_HEADERS = ("ATTEMPT", "#", "STEP", "PS_TYPE", "STATUS", "STARTED", "DURATION", "ROWS", "ERROR")


def run_row(record: Any) -> list[Any]:
    return [
        record.run_id, record.org_slug, record.status, record.pipeline, record.trigger, record.attempt,
        format_time(record.start_time or record.event_time), format_duration(record.duration_ms),
        record.rows_processed, format_error(record.error_code, record.error_message),
    ]


def step_row(step: Any) -> list[Any]:
    return [
        step.attempt, step.step_index, step.step_id, step.ps_type, step.status, format_time(step.start_time),
        format_duration(step.duration_ms), step.rows_processed, format_error(step.error_code, step.error_message),
    ]


def render_run(record: Any, steps: Sequence[Any]) -> str:
    fields = [
        ("Run", record.run_id), ("Org", record.org_slug), ("Status", record.status),
        ("Pipeline", record.pipeline), ("Pipeline id", record.pipeline_id), ("Trigger", record.trigger),
        ("Attempt", record.attempt), ("Started", format_time(record.start_time)),
        ("Ended", format_time(record.end_time)), ("Duration", format_duration(record.duration_ms)),
        ("Rows", record.rows_processed),
        ("Steps", f"{record.steps_total} ({record.steps_failed or 0} failed)" if record.steps_total is not None
         else None),
        ("Error", format_error(record.error_code, record.error_message, width=500) or None),
        ("Delivery count", record.delivery_count), ("Trace id", record.trace_id),
        ("Recorded", format_time(record.event_time)),
    ]
    width = max(len(name) for name, _ in fields)
    lines = [f"{name + ':':<{width + 1}} {_cell(value)}" for name, value in fields if value not in (None, "")]
    lines.append("")
    lines.append(render_table(STEP_HEADERS, [step_row(s) for s in steps]) if steps else "No step logs.")
    return "\n".join(lines)


def _jsonable(record: Any) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(record).items()}


def _runlog() -> Any:
    from convergence.cli import load_settings_or_exit
    from convergence.warehouse.client import make_client
    from convergence.warehouse.runlog import RunLog

    settings = load_settings_or_exit()
    return RunLog(make_client(settings), settings)


# -- commands ----------------------------------------------------------------------------------------------
@click.group()
def runs() -> None:
    """Pipeline runs from the run log: list them, show one with its steps."""


@runs.command("list")
@click.option("--org", callback=_org_option, help="Only this org's runs.")
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False), help="Only runs in this state.")
@click.option("--pipeline", default=None, help="Only runs of this pipeline (provider/domain/name).")
@click.option("--since", callback=_since_option, help="Runs recorded since: 30m, 12h, 1d, 2w or an ISO date/time.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="At most N runs.")
@output_options  # json: one object per line
def list_runs(org: str | None, status: str | None, pipeline: str | None, since: datetime | None, limit: int,
              as_json: bool) -> None:
    """Runs in their latest state, newest first."""
    status = status.upper() if status else None
    error_code = None
    if status == "DEAD_LETTERED":  # recorded as FAILED with that reason by the dead-letter drain
        from convergence.warehouse.runlog import DEAD_LETTERED
        status, error_code = "FAILED", DEAD_LETTERED
    records = _runlog().list_runs(org_slug=org, status=status, since=since, limit=limit, pipeline=pipeline,
                                  error_code=error_code)
    if as_json:
        for record in records:
            click.echo(json.dumps(_jsonable(record), default=str))
        return
    if not records:
        click.echo("No runs found" + (f" for org {org}" if org else "") + ".")
        return
    click.echo(render_table(RUN_HEADERS, [run_row(r) for r in records]))
    click.echo(f"\n{len(records)} run(s)" + (" (limit reached: use --limit for more)" if len(records) == limit else ""))


@runs.command("show")
@click.argument("run_id")
@click.option("--org", callback=_org_option, help="Refuse the run unless it belongs to this org.")
@output_options
def show_run(run_id: str, org: str | None, as_json: bool) -> None:
    """One run's latest state and every step of every attempt."""
    runlog = _runlog()
    record = runlog.latest_run(run_id, org_slug=org)
    if record is None:
        raise click.ClickException(f"run {run_id} not found" + (f" for org {org}" if org else ""))
    steps = runlog.step_logs(run_id, record.org_slug)
    if as_json:
        click.echo(json.dumps({"run": _jsonable(record), "steps": [_jsonable(s) for s in steps]}, default=str,
                              indent=2))
        return
    click.echo(render_run(record, steps))


# -- gaps ----------------------------------------------------------------------------------------------
GAP_HEADERS = ("DAY", "WEEKDAY")


def fill_run_id(org: str, pipeline: str, day: date) -> str:
    """The one run_id of a gap fill for (org, pipeline, day): a repeated --fill publishes the same id,
    and the consumer never runs an id that already succeeded."""
    from convergence.schemas import deterministic_run_id

    return deterministic_run_id(org, pipeline, "backfill", day.isoformat(), prefix="fill")


def _day_option(_: click.Context, __: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date (YYYY-MM-DD)") from None


@runs.command("gaps")
@click.argument("org", callback=_org_option)
@click.argument("pipeline", shell_complete=complete_pipelines)
@click.option("--since", "since", default="90d", show_default=True, callback=_since_option,
              help="First day to check: 90d, 2w or an ISO date.")
@click.option("--until", "until", default=None, callback=_day_option,
              help="Last day to check (ISO date; default yesterday UTC, the last day a daily run covers).")
@click.option("--fill", is_flag=True, help="Publish one backfill run per missing day (start_date = end_date = day).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="With --fill: follow the runs live.")
@click.option("--timeout", type=click.FloatRange(min=1), default=3600.0, show_default=True,
              help="Seconds --fill waits for its runs before giving up (exit 3).")
@output_options
def gaps(org: str, pipeline: str, since: datetime, until: date | None, fill: bool, wait: bool, timeout: float,
         as_json: bool) -> None:
    """Days with no successful run of PIPELINE for ORG (a run covers its start_date..end_date, widened by
    its lookback_days); with --fill, publish them as backfill runs. Exit codes as `publish run`."""
    from convergence.cli import load_settings_or_exit
    from convergence.commands.publish import MAX_BACKFILL_DAYS, backfill_requests, publish_requests
    from convergence.pipeline import ConfigError, PipelineLoader
    from convergence.schemas import MessageRejected
    from convergence.warehouse.client import make_client
    from convergence.warehouse.run_gaps import missing_days

    if fill and as_json:
        raise click.UsageError("--fill shows the runs' progress, not JSON: list the gaps with --json, then --fill")
    first = since.astimezone(UTC).date()
    last = until or datetime.now(UTC).date() - timedelta(days=1)
    if last < first:
        raise click.UsageError(f"--until {last} is before the first day {first}")
    if (last - first).days + 1 > MAX_BACKFILL_DAYS:
        raise click.UsageError(f"{first}..{last} is {(last - first).days + 1} days: at most {MAX_BACKFILL_DAYS}")
    settings = load_settings_or_exit()
    try:
        PipelineLoader(settings.configs_dir).load(pipeline)
    except ConfigError as error:
        click.echo(f"error: {error.code}: {error}", err=True)
        raise SystemExit(2) from None
    days = missing_days(make_client(settings), settings, org, pipeline, first, last)
    if as_json:
        click.echo(json.dumps({"org_slug": org, "pipeline": pipeline, "first_day": first.isoformat(),
                               "last_day": last.isoformat(), "missing": [d.isoformat() for d in days]}))
        return
    scope = f"{pipeline} for {org}, {first}..{last}"
    if not days:
        click.echo(f"No gaps: every day of {scope} has a successful run.")
        return
    click.echo(render_table(GAP_HEADERS, [[d.isoformat(), d.strftime("%a")] for d in days]))
    click.echo(f"\n{len(days)} day(s) without a successful run of {scope}")
    if not fill:
        return
    try:
        requests = backfill_requests(org, pipeline, days, {}, ["start_date", "end_date"],
                                     run_id=lambda day: fill_run_id(org, pipeline, day))
    except MessageRejected as error:
        click.echo(f"error: {error.code.value}: {error}", err=True)
        raise SystemExit(2) from None
    labels = {request.run_id: request.parameters["start_date"] for request in requests}
    code = publish_requests(settings, org, pipeline, requests, labels, wait=wait, timeout=timeout, backfill=True)
    if wait:
        raise SystemExit(code)
