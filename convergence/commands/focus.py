"""`convergence focus check ORG [--date D | --start-date S --end-date E] [--source S] [--json] [--no-record]`:
the FOCUS conformance rules (processors/focus/conformance.py) on the org's focus_cost_daily. Every violated
rule is reported, and every rule's result (PASS/FAIL, counts) is recorded in the central org_meta_dq_results
under a run id of the check's own (one load job per check). The exit code is 1 when any rule is violated
(or the table is missing) or the results could not be recorded, 0 otherwise."""

from __future__ import annotations

import json
import uuid
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
@click.option("--no-record", is_flag=True, help="Do not record the results in org_meta_dq_results.")
def check_command(org: str, day: object, start_date: object, end_date: object, source: str | None, table: str,
                  as_json: bool, no_record: bool) -> None:
    """Run the FOCUS column rules on ORG's rows, report every violation and record every rule's result."""
    from convergence.cli import load_settings_or_exit
    from convergence.pipeline.errors import StepError
    from convergence.processors.focus.conformance import CheckRun, check, format_report, record
    from convergence.warehouse.client import make_client
    from convergence.warehouse.writer import Writer

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
    client = make_client(settings)
    report = check(client, settings, org, table=table, start=start, end=end, source=source)
    recorded: dict[str, object] = {}
    if not no_record:
        run_id = f"focus_check_{uuid.uuid4().hex[:16]}"
        try:
            rows = record(Writer(client, settings), settings, report, org, CheckRun(run_id)).rows_written
            recorded = {"run_id": run_id, "rows": rows, "table": f"{settings.central_dataset}.org_meta_dq_results"}
        except StepError as error:
            recorded = {"run_id": run_id, "error": str(error)[:300]}
    if as_json:
        click.echo(json.dumps({**report.as_dict(), **({"recorded": recorded} if recorded else {})}, indent=2))
    else:
        click.echo(format_report(report))
        if "error" in recorded:
            click.echo(f"Results NOT recorded in org_meta_dq_results: {recorded['error']}", err=True)
        elif recorded:
            click.echo(f"Recorded {recorded['rows']} result(s) in {recorded['table']} (run {recorded['run_id']}).")
    if not report.ok or "error" in recorded:
        raise SystemExit(1)
