"""Per-org pipeline configuration: enabled or not, the org's own parameters over the YAML's, its own schedule.

Two central tables, one row per (org, pipeline) each, written only by MERGE keyed by (org, pipeline) from
operator commands (`convergence orgs pipelines ...`), never streamed, so the MERGE never meets rows in the
streaming buffer (BigQuery "Transform data with DML" page: DML cannot change rows streamed in the last 30
minutes) and stays far below the 1,500 table modifications per table per day ("Quotas and limits" page):
- org_pipeline_configs: `is_active` (the org runs the pipeline at all) and `parameters` (JSON object
  merged over the YAML schedule's parameters);
- org_scheduled_pipeline_runs: `cron_expression` in `timezone` (an "HH:MM" is stored as the cron of the
  YAML's schedule type at that time), replacing the YAML schedule for that org while `is_active`.

Readers: the scheduler fan-out (one query per tick for every org, `read`) and the org gate (a branch of its
standings query, `GATE_BRANCH`, for PIPELINE_DISABLED). Both take the newest row per (org, pipeline).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from croniter import croniter

from convergence.pipeline.models import Schedule
from convergence.schemas import RUN_REQUEST_V1, schema

log = structlog.get_logger(__name__)

CONFIGS_TABLE = "org_pipeline_configs"
SCHEDULES_TABLE = "org_scheduled_pipeline_runs"

_PARAMETERS = schema(RUN_REQUEST_V1)["properties"]["parameters"]
_PARAMETER_NAME = re.compile(_PARAMETERS["propertyNames"]["pattern"])
_RESERVED_NAMES = frozenset(_PARAMETERS["propertyNames"]["not"]["enum"])
MAX_PARAMETERS = int(_PARAMETERS["maxProperties"])
MAX_VALUE_LENGTH = int(_PARAMETERS["additionalProperties"]["maxLength"])
_HH_MM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
# Slots one org schedule may add to one tick window: a cron firing every minute must not flood the topic.
MAX_SLOTS_PER_WINDOW = 60


class OrgConfigError(ValueError):
    """A parameter, schedule or time zone the platform would refuse; the message says which and why."""


@dataclass(frozen=True)
class OrgPipelineConfig:
    """What one org set for one pipeline; defaults (no rows) mean: enabled, YAML parameters and schedule."""

    org_slug: str
    pipeline: str
    enabled: bool = True
    parameters: dict[str, str] = field(default_factory=dict)
    cron: str | None = None  # the org's own schedule, when active
    timezone: str = "UTC"
    schedule_parameters: dict[str, str] = field(default_factory=dict)
    has_config_row: bool = False
    has_schedule_row: bool = False
    error: str | None = None  # a row could not be read: the org's runs of the pipeline are skipped

    @property
    def own_schedule(self) -> bool:
        return self.cron is not None


@dataclass
class OrgPipelineConfigs:
    """(org, pipeline) -> OrgPipelineConfig, from one read."""

    by_key: dict[tuple[str, str], OrgPipelineConfig] = field(default_factory=dict)

    def get(self, org: str, pipeline: str) -> OrgPipelineConfig | None:
        return self.by_key.get((org, pipeline))

    def __iter__(self):
        return iter(self.by_key.values())

    def __len__(self) -> int:
        return len(self.by_key)


def select_sql(central: Any, *, one_org: bool) -> str:
    """Both tables in one statement, every NULL typed (Google's analyzer refuses untyped NULL columns in
    UNION ALL). Filtered by `@pipelines` and by the orgs: `@org` (one) or `@orgs` (a tick's eligible orgs)."""
    where = " WHERE `pipeline` IN UNNEST(@pipelines) AND " + ("`org_slug` = @org" if one_org else
                                                               "`org_slug` IN UNNEST(@orgs)")
    return (
        "SELECT 'config' AS kind, `org_slug`, `pipeline`, `is_active`, `parameters`, "  # noqa: S608 - validated names
        "CAST(NULL AS STRING) AS cron_expression, CAST(NULL AS STRING) AS zone, "
        "COALESCE(`updated_at`, `created_at`) AS changed_at FROM " + central.ref(CONFIGS_TABLE) + where +
        " UNION ALL SELECT 'schedule', `org_slug`, `pipeline`, `is_active`, `parameters`, `cron_expression`, "
        "`timezone`, COALESCE(`updated_at`, `created_at`) FROM " + central.ref(SCHEDULES_TABLE) + where
    )


def gate_branch(central: Any) -> str:
    """The org gate's UNION ALL branch (its columns: kind, org_slug, status, plan, changed_at, runs): one row
    per config row of the orgs asked about, the pipeline in `status`, 1/0 for enabled in `runs`."""
    return ("SELECT 'pipeline', `org_slug`, `pipeline`, CAST(NULL AS STRING), "  # noqa: S608 - validated names
            "COALESCE(`updated_at`, `created_at`), IF(`is_active`, 1, 0) FROM " + central.ref(CONFIGS_TABLE) +
            " WHERE `org_slug` IN UNNEST(@orgs)")


def disabled_pipelines(rows: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """From one org's gate rows (newest row per pipeline decides): the pipelines it disabled."""
    latest: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        seen = latest.get(row["status"])
        if seen is None or _later(row["changed_at"], seen["changed_at"]):
            latest[row["status"]] = row
    return frozenset(pipeline for pipeline, row in latest.items() if not row["runs"])


def from_rows(rows: Iterable[Mapping[str, Any]]) -> OrgPipelineConfigs:
    """Newest row per (kind, org, pipeline). A row with unreadable parameters or schedule sets `error` (and
    is logged): one bad row must not fail, and endlessly redeliver, a tick, nor run the org's pipeline with
    parameters or on a schedule it did not ask for."""
    latest: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for row in rows:
        key = (row["kind"], row["org_slug"], row["pipeline"])
        seen = latest.get(key)
        if seen is None or _later(row["changed_at"], seen["changed_at"]):
            latest[key] = row
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for (kind, org, pipeline), row in latest.items():
        entry = merged.setdefault((org, pipeline), {"org_slug": org, "pipeline": pipeline})
        if kind == "config":
            entry.update(enabled=bool(row["is_active"]), has_config_row=True)
        else:
            entry["has_schedule_row"] = True
        try:
            if kind == "config":
                entry["parameters"] = parse_parameters(row["parameters"])
            elif row["is_active"]:  # an inactive schedule row is not read at all
                zone = validate_timezone(row["zone"] or "UTC")
                entry.update(cron=validate_cron(row["cron_expression"] or ""), timezone=zone,
                             schedule_parameters=parse_parameters(row["parameters"]))
        except OrgConfigError as error:
            entry["error"] = f"{CONFIGS_TABLE if kind == 'config' else SCHEDULES_TABLE}: {error}"
            log.error("org pipeline config row unreadable", org_slug=org, pipeline=pipeline, error=entry["error"])
    return OrgPipelineConfigs({key: OrgPipelineConfig(**entry) for key, entry in merged.items()})


def read(central: Any, pipelines: Sequence[str], org: str | None = None,
         orgs: Sequence[str] = ()) -> OrgPipelineConfigs:
    """One org's (`org`), or these orgs' (`orgs`), config rows for these pipelines: one query."""
    if not pipelines or (org is None and not orgs):
        return OrgPipelineConfigs()
    params: dict[str, Any] = {"pipelines": sorted(pipelines)}
    if org is not None:
        params["org"] = org
    else:
        params["orgs"] = sorted(orgs)
    return from_rows(central.queries.rows(select_sql(central, one_org=org is not None), params))


class OrgConfigReader:
    """Callable for the fan-out: (pipelines, orgs) -> those orgs' configs for them, in one query whatever the
    number of orgs (each row applies to its own org only). Counts its queries (`calls`)."""

    def __init__(self, client: Any, settings: Any):
        from convergence.tenancy.central import Central

        self.central = Central(client, settings)
        self.calls = 0

    def __call__(self, pipelines: Sequence[str], orgs: Sequence[str]) -> OrgPipelineConfigs:
        self.calls += 1
        configs = read(self.central, pipelines, orgs=orgs)
        log.info("org pipeline configs read", rows=len(configs))
        return configs


# ---- values ----------------------------------------------------------------------------------------------


def parse_parameters(raw: Any) -> dict[str, str]:
    if raw in (None, ""):
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise OrgConfigError("parameters is not a JSON object") from None
    if not isinstance(value, Mapping):
        raise OrgConfigError("parameters is not a JSON object")
    return validate_parameters({str(k): v for k, v in value.items()})


def validate_parameters(parameters: Mapping[str, Any]) -> dict[str, str]:
    """Names and values the run request schema accepts (values kept as text, as the YAML's are)."""
    if len(parameters) > MAX_PARAMETERS:
        raise OrgConfigError(f"{len(parameters)} parameters: a run takes at most {MAX_PARAMETERS}")
    out: dict[str, str] = {}
    for name, value in parameters.items():
        if not _PARAMETER_NAME.fullmatch(name) or name in _RESERVED_NAMES:
            raise OrgConfigError(f"parameter name {name[:70]!r} is not allowed: letters, digits and _ "
                                 f"(not starting with a digit, at most 64), and not one of "
                                 f"{', '.join(sorted(_RESERVED_NAMES))}")
        if isinstance(value, dict | list):
            raise OrgConfigError(f"parameter {name}: a value must be text, a number or a boolean")
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) > MAX_VALUE_LENGTH:
            raise OrgConfigError(f"parameter {name}: value longer than {MAX_VALUE_LENGTH} characters")
        out[name] = text
    return out


def validate_timezone(zone: str) -> str:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise OrgConfigError(f"unknown time zone {zone[:60]!r} (an IANA name such as Europe/Paris)") from None
    return zone


def validate_cron(expression: str) -> str:
    expression = " ".join(expression.split())
    if len(expression.split(" ")) != 5 or not croniter.is_valid(expression):
        raise OrgConfigError(f"invalid cron expression {expression[:60]!r}: five fields, "
                             "minute hour day-of-month month day-of-week (e.g. '30 6 * * 1-5')")
    return expression


def schedule_cron(spec: str, yaml_schedule: Schedule | None) -> str:
    """`--schedule` as stored: a cron as given, or "HH:MM" on the YAML schedule's type (daily when the
    pipeline has no schedule): hourly uses the minute only, monthly keeps the YAML's day of the month."""
    match = _HH_MM.fullmatch(spec.strip())
    if match is None:
        return validate_cron(spec)
    hour, minute = int(match.group(1)), int(match.group(2))
    kind = yaml_schedule.type if yaml_schedule else "daily"
    if kind == "hourly":
        return f"{minute} * * * *"
    if kind == "monthly":
        assert yaml_schedule is not None
        return f"{minute} {hour} {yaml_schedule.day_of_month} * *"
    return f"{minute} {hour} * * *"


def cron_slots(cron: str, timezone: str, window_start: datetime, window_end: datetime) -> list[datetime]:
    """Slot times (UTC) of the cron, read in `timezone`, in (window_start, window_end]."""
    zone = ZoneInfo(timezone)
    it = croniter(cron, window_start.astimezone(zone))
    slots: list[datetime] = []
    while len(slots) < MAX_SLOTS_PER_WINDOW:
        slot = it.get_next(datetime).astimezone(UTC)
        if slot > window_end:
            break
        if slot > window_start:
            slots.append(slot)
    return slots


def next_slot(cron: str, timezone: str, after: datetime) -> datetime:
    return croniter(cron, after.astimezone(ZoneInfo(timezone))).get_next(datetime).astimezone(UTC)


# ---- writes (operator commands) ---------------------------------------------------------------------------


def config_id(org: str, pipeline: str) -> str:
    return f"{org}:{pipeline}"


def write_config(central: Any, org: str, pipeline: str, *, pipeline_id: str | None, enabled: bool | None = None,
                 parameters: Mapping[str, str] | None = None, now: datetime | None = None) -> int:
    """One MERGE keyed by (org, pipeline) on org_pipeline_configs; None leaves a field as it is."""
    from convergence.warehouse.query import Typed

    now = now or datetime.now(UTC)
    text = json.dumps(dict(parameters), sort_keys=True) if parameters is not None else None
    return central.queries.dml(
        "MERGE " + central.ref(CONFIGS_TABLE) + " AS T USING (SELECT @org AS org_slug, @pipeline AS pipeline) AS S "  # noqa: S608
        "ON T.`org_slug` = S.org_slug AND T.`pipeline` = S.pipeline "
        "WHEN MATCHED THEN UPDATE SET `is_active` = COALESCE(@enabled, T.`is_active`), "
        "`parameters` = COALESCE(@parameters, T.`parameters`), "
        "`pipeline_id` = COALESCE(@pipeline_id, T.`pipeline_id`), `updated_at` = @now "
        "WHEN NOT MATCHED THEN INSERT (`config_id`, `org_slug`, `pipeline`, `pipeline_id`, `parameters`, "
        "`is_active`, `created_at`, `updated_at`) VALUES (@config_id, @org, @pipeline, @pipeline_id, @parameters, "
        "COALESCE(@enabled, TRUE), @now, @now)",
        {"org": org, "pipeline": pipeline, "config_id": config_id(org, pipeline),
         "pipeline_id": Typed("STRING", pipeline_id), "parameters": Typed("STRING", text),
         "enabled": Typed("BOOL", enabled), "now": now})


def write_schedule(central: Any, org: str, pipeline: str, *, cron: str, timezone: str, active: bool,
                   now: datetime | None = None) -> int:
    """One MERGE keyed by (org, pipeline) on org_scheduled_pipeline_runs (`next_run_at` for people)."""
    from convergence.warehouse.query import Typed

    now = now or datetime.now(UTC)
    upcoming = next_slot(cron, timezone, now) if active else None
    return central.queries.dml(
        "MERGE " + central.ref(SCHEDULES_TABLE) + " AS T USING (SELECT @org AS org_slug, @pipeline AS pipeline) AS S "  # noqa: S608
        "ON T.`org_slug` = S.org_slug AND T.`pipeline` = S.pipeline "
        "WHEN MATCHED THEN UPDATE SET `cron_expression` = @cron, `timezone` = @zone, `is_active` = @active, "
        "`next_run_at` = @next_run_at, `updated_at` = @now "
        "WHEN NOT MATCHED THEN INSERT (`schedule_id`, `org_slug`, `pipeline`, `cron_expression`, `timezone`, "
        "`is_active`, `next_run_at`, `created_at`, `updated_at`) VALUES (@schedule_id, @org, @pipeline, @cron, "
        "@zone, @active, @next_run_at, @now, @now)",
        {"org": org, "pipeline": pipeline, "schedule_id": config_id(org, pipeline), "cron": cron, "zone": timezone,
         "active": active, "next_run_at": Typed("TIMESTAMP", upcoming), "now": now})


def _later(a: datetime | None, b: datetime | None) -> bool:
    return a is not None and (b is None or a > b)


__all__ = ["MAX_SLOTS_PER_WINDOW", "OrgConfigError", "OrgConfigReader", "OrgPipelineConfig", "OrgPipelineConfigs",
           "cron_slots", "disabled_pipelines", "from_rows", "gate_branch", "next_slot", "parse_parameters", "read",
           "schedule_cron", "select_sql", "validate_cron", "validate_parameters", "validate_timezone",
           "write_config", "write_schedule"]
