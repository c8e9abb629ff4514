"""`convergence costs ORG --by provider,model,service --since 30d`: an org's cost from its FOCUS table.

Reads `focus_cost_daily` in the org's dataset, filtered by org and dates through query parameters. The
grouping names map to fixed columns; nothing from the command line becomes SQL text.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import click

from convergence.commands.output import output_options

# --by name -> FOCUS column
DIMENSIONS = {
    "provider": "ServiceProviderName",
    "service": "ServiceName",
    "category": "ServiceCategory",
    "model": "x_Model",
    "subaccount": "SubAccountName",
    "charge": "ChargeCategory",
    "currency": "BillingCurrency",
    "day": "x_ChargeDate",
}


def parse_dimensions(value: str) -> list[str]:
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in DIMENSIONS]
    if unknown or not names:
        raise click.BadParameter(f"{', '.join(unknown) or 'nothing'}: group by one or more of "
                                 f"{', '.join(DIMENSIONS)}", param_hint="--by")
    return list(dict.fromkeys(names + (["currency"] if "currency" not in names else [])))


def cost_query(table: str, dimensions: list[str]) -> str:
    columns = [f"`{DIMENSIONS[name]}` AS `{name}`" for name in dimensions]
    keys = ", ".join(f"`{name}`" for name in dimensions)
    return (
        f"SELECT {', '.join(columns)}, SUM(`EffectiveCost`) AS effective_cost, SUM(`BilledCost`) AS billed_cost "  # noqa: S608
        f"FROM `{table}` WHERE `x_OrgSlug` = @org AND `x_ChargeDate` BETWEEN @start_date AND @end_date "
        f"GROUP BY {keys} ORDER BY effective_cost DESC, {keys}"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


@click.command()
@click.argument("org")
@click.option("--by", "by", default="provider,service", show_default=True,
              help=f"Group by these, comma-separated: {', '.join(DIMENSIONS)}.")
@click.option("--since", default="30d", show_default=True, help="From: 7d, 30d, 12w or an ISO date (until today).")
@output_options
def costs(org: str, by: str, since: str, as_json: bool) -> None:
    """An org's cost per provider, model, service... from its FOCUS table, largest first."""
    from convergence.cli import load_settings_or_exit
    from convergence.commands.runs import parse_since, render_table
    from convergence.warehouse.client import make_client
    from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug
    from convergence.warehouse.query import QueryRunner

    try:
        org = validate_org_slug(org)
    except InvalidIdentifier as error:
        raise click.BadParameter(str(error), param_hint="ORG") from None
    dimensions = parse_dimensions(by)
    try:
        start = parse_since(since).date()
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--since") from None
    end = datetime.now(UTC).date()
    settings = load_settings_or_exit()
    client = make_client(settings)
    table = f"{client.project}.{settings.org_dataset(org)}.focus_cost_daily"
    from google.api_core import exceptions

    try:
        rows = QueryRunner(client, settings).rows(cost_query(table, dimensions),
                                                  {"org": org, "start_date": start, "end_date": end})
    except exceptions.NotFound:
        raise click.ClickException(f"org {org} has no FOCUS table yet ({table}): run its focus pipelines "
                                   "first") from None
    rows = [{key: _plain(value) for key, value in row.items()} for row in rows]
    if as_json:
        click.echo(json.dumps({"org": org, "from": start.isoformat(), "to": end.isoformat(), "by": dimensions,
                               "rows": rows}, indent=2))
        return
    if not rows:
        click.echo(f"No cost for org {org} from {start} to {end}.")
        return
    headers = [name.upper() for name in dimensions] + ["EFFECTIVE_COST", "BILLED_COST"]
    table_rows = [[row[name] for name in dimensions] + [f"{row['effective_cost']:,.2f}", f"{row['billed_cost']:,.2f}"]
                  for row in rows]
    click.echo(render_table(headers, table_rows))
    totals: dict[str, float] = {}
    for row in rows:
        totals[row["currency"]] = totals.get(row["currency"], 0.0) + (row["effective_cost"] or 0.0)
    click.echo("\n" + ", ".join(f"total {amount:,.2f} {currency}" for currency, amount in sorted(totals.items()))
               + f" ({start} to {end})")
