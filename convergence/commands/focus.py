"""`convergence focus check ORG [--date D | --start-date S --end-date E] [--source S] [--json]`: the FOCUS
conformance rules (processors/focus/conformance.py) on the org's focus_cost_daily. Every violated rule is
reported; the exit code is 1 when any rule is violated (or the table is missing), 0 otherwise."""

from __future__ import annotations

import json
from datetime import date

import click


def _org(_: click.Context, __: click.Parameter, value: str) -> str:
    from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug

    try:
        return validate_org_slug(value)
    except InvalidIdentifier as error:
        raise click.BadParameter(str(error)) from None


@click.group()
def focus() -> None:
    """The FOCUS unified cost view (focus_cost_daily): conformance check."""


@focus.command("check")
@click.argument("org", callback=_org)
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="Only rows charged on this day.")
@click.option("--start-date", type=click.DateTime(["%Y-%m-%d"]), help="First charge day (x_ChargeDate).")
@click.option("--end-date", type=click.DateTime(["%Y-%m-%d"]), help="Last charge day (x_ChargeDate).")
@click.option("--source", type=click.Choice(["openai", "anthropic", "gcp", "saas"]), help="Only one source's rows.")
@click.option("--table", default="focus_cost_daily", show_default=True, help="FOCUS table in the org dataset.")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
def check_command(org: str, day: object, start_date: object, end_date: object, source: str | None, table: str,
                  as_json: bool) -> None:
    """Run the FOCUS column rules on ORG's rows and report every violation."""
    from convergence.cli import load_settings_or_exit
    from convergence.processors.focus.conformance import check, format_report
    from convergence.warehouse.client import make_client

    def as_date(value: object) -> date | None:
        return value.date() if value is not None else None  # type: ignore[attr-defined]

    start, end = as_date(start_date), as_date(end_date)
    if day is not None:
        if start or end:
            raise click.UsageError("--date excludes --start-date/--end-date")
        start = end = as_date(day)
    if start and end and start > end:
        raise click.UsageError(f"--start-date {start} is after --end-date {end}")
    settings = load_settings_or_exit()
    report = check(make_client(settings), settings, org, table=table, start=start, end=end, source=source)
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else format_report(report))
    if not report.ok:
        raise SystemExit(1)
