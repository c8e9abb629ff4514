"""`convergence dlq list|replay`: run requests Pub/Sub gave up on, and republishing them after a fix.

The consumer drains the dead-letter subscription into the run log: a row with error_code DEAD_LETTERED
that keeps the original request (request_json). A run is "dead-lettered" while that row is its newest one;
once replayed, the replay's own rows are newer and it drops off the list.

Replay republishes the stored request to the requests topic with trigger `replay` and the SAME run_id
(and parameters and trace_id): consumers skip a run_id that already succeeded, so replaying twice, or
replaying a run that did succeed meanwhile, never runs it twice.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from convergence.commands.output import output_options

DEFAULT_LIMIT = 1000
_RELATIVE = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class DeadLetter:
    run_id: str
    org_slug: str
    pipeline: str | None
    trigger: str | None
    delivery_count: int | None
    request_json: str | None
    message: str | None
    dead_lettered_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "org_slug": self.org_slug, "pipeline": self.pipeline,
                "trigger": self.trigger, "delivery_count": self.delivery_count,
                "replayable": self.request_json is not None, "message": self.message,
                "dead_lettered_at": self.dead_lettered_at.isoformat() if self.dead_lettered_at else None}


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """`24h`, `7d`, `30m`, or an ISO date/time (UTC unless it says otherwise)."""
    if value is None:
        return None
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(value.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: use 24h, 7d, 30m or an ISO date/time", param_hint="--since") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def dead_lettered(runlog: Any, *, org_slug: str | None = None, run_ids: list[str] | None = None,
                  since: datetime | None = None, limit: int = DEFAULT_LIMIT) -> list[DeadLetter]:
    """Runs whose newest run log row is the dead-letter row (one parameterized query)."""
    from convergence.warehouse.identifiers import validate_org_slug
    from convergence.warehouse.query import QueryRunner
    from convergence.warehouse.runlog import DEAD_LETTERED

    if not 1 <= int(limit) <= 10_000:
        raise ValueError("limit must be between 1 and 10000")
    where = ["TRUE"]
    params: dict[str, Any] = {"dead": DEAD_LETTERED}
    if org_slug is not None:
        where.append("`org_slug` = @org_slug")
        params["org_slug"] = validate_org_slug(org_slug)
    if run_ids:
        where.append("`run_id` IN UNNEST(@run_ids)")
        params["run_ids"] = [str(r) for r in run_ids]
    if since is not None:
        where.append("`event_time` >= @since")
        params["since"] = since
    columns = ("`run_id`, `org_slug`, `pipeline`, `trigger`, `delivery_count`, `request_json`, `error_code`, "
               "`error_message`, `event_time`")
    sql = (f"SELECT {columns} FROM (SELECT {columns}, ROW_NUMBER() OVER (PARTITION BY `org_slug`, `run_id` "  # noqa: S608
           f"ORDER BY `event_time` DESC, `state_rank` DESC) AS `_rn` FROM `{runlog.runs_table}` "
           f"WHERE {' AND '.join(where)}) WHERE `_rn` = 1 AND `error_code` = @dead "
           f"ORDER BY `event_time` DESC LIMIT {int(limit)}")
    rows = QueryRunner(runlog.client, runlog.settings).rows(sql, params)
    return [DeadLetter(run_id=row["run_id"], org_slug=row["org_slug"], pipeline=row["pipeline"],
                       trigger=row["trigger"], delivery_count=row["delivery_count"],
                       request_json=row["request_json"], message=row["error_message"],
                       dead_lettered_at=row["event_time"]) for row in rows]


def replay_request(item: DeadLetter) -> Any:
    """The stored request as a replay: same run_id, parameters and trace id; trigger `replay`."""
    from convergence.schemas import MessageRejected, Trigger, validate_run_request

    if item.request_json is None:
        raise ValueError("no stored request (the dead-lettered message did not decode)")
    try:
        original = validate_run_request(json.loads(item.request_json))
    except (ValueError, MessageRejected) as error:
        raise ValueError(f"stored request does not decode: {error}") from None
    if original.run_id != item.run_id or original.org_slug != item.org_slug:
        raise ValueError("stored request names another run or org")
    return original.model_copy(update={"trigger": Trigger.REPLAY, "requested_by": "convergence-dlq-replay",
                                       "requested_at": datetime.now(UTC)})


def replay(publisher: Any, items: list[DeadLetter]) -> tuple[list[str], dict[str, str]]:
    """Republish; returns (replayed run_ids, {run_id: why not})."""
    from convergence.publisher.requests import PublishError

    skipped: dict[str, str] = {}
    requests = []
    for item in items:
        try:
            requests.append(replay_request(item))
        except ValueError as error:
            skipped[item.run_id] = str(error)
    if not requests:
        return [], skipped
    try:
        return publisher.publish_many(requests), skipped
    except PublishError as error:
        skipped.update({run_id: f"not published: {failure}" for run_id, failure in error.failed.items()})
        return error.published, skipped


_org_option = click.option("--org", "org_slug", default=None, help="Only this org.")
_since_option = click.option("--since", default=None, help="Dead-lettered since: 24h, 7d, or an ISO date/time.")
_limit_option = click.option("--limit", type=click.IntRange(1, 10_000), default=DEFAULT_LIMIT, show_default=True)


@click.group()
def dlq() -> None:
    """Dead-lettered run requests: list, replay."""


@dlq.command("list")
@_org_option
@_since_option
@_limit_option
@output_options  # json: one object per line
def list_(org_slug: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """Runs currently dead-lettered (newest first)."""
    from convergence.cli import load_settings_or_exit
    from convergence.runtime import Services

    settings = load_settings_or_exit()
    services = Services(settings)
    try:
        items = dead_lettered(services.runlog, org_slug=org_slug, since=parse_since(since), limit=limit)
    finally:
        services.close()
    for item in items:
        if as_json:
            click.echo(json.dumps(item.to_dict()))
            continue
        when = f"{item.dead_lettered_at:%Y-%m-%d %H:%M:%S}" if item.dead_lettered_at else "-"
        note = "" if item.request_json is not None else "  (not replayable: message did not decode)"
        click.echo(f"{when}  {item.run_id}  {item.org_slug}  {item.pipeline or '-'}  "
                   f"attempts={item.delivery_count or '?'}{note}")
    if not as_json:
        click.echo(f"{len(items)} dead-lettered run(s)")


@dlq.command("replay")
@click.option("--run-id", "run_ids", multiple=True, help="Replay this run (repeatable).")
@_org_option
@_since_option
@_limit_option
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead-lettered run (no other filter).")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed.")
def replay_command(run_ids: tuple[str, ...], org_slug: str | None, since: str | None, limit: int,
                   replay_all: bool, dry_run: bool) -> None:
    """Republish dead-lettered requests (trigger replay, same run_id) to the requests topic."""
    from convergence.cli import load_settings_or_exit
    from convergence.runtime import Services

    if not (run_ids or org_slug or since or replay_all):
        raise click.UsageError("say what to replay: --run-id, --org, --since, or --all")
    settings = load_settings_or_exit()
    services = Services(settings)
    try:
        items = dead_lettered(services.runlog, org_slug=org_slug, run_ids=list(run_ids) or None,
                              since=parse_since(since), limit=limit)
        missing = sorted(set(run_ids) - {item.run_id for item in items})
        for run_id in missing:
            click.echo(f"not dead-lettered (unknown, or replayed already): {run_id}", err=True)
        if dry_run:
            for item in items:
                click.echo(f"would replay {item.run_id}  {item.org_slug}  {item.pipeline or '-'}")
            click.echo(f"{len(items)} run(s) would be replayed")
            return
        replayed, skipped = replay(services.requests, items)
    finally:
        services.close()
    for run_id in replayed:
        click.echo(f"replayed {run_id}")
    for run_id, why in skipped.items():
        click.echo(f"skipped {run_id}: {why}", err=True)
    click.echo(f"{len(replayed)} replayed, {len(skipped)} skipped")
    if skipped or missing:
        sys.exit(1)
