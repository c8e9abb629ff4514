"""The org gate, run before every pipeline: the org exists and is active, its subscription status may run
(ACTIVE or TRIAL; the billing-status table in configs/setup/plans.yml), the org has not disabled the pipeline (its
org_pipeline_configs row, read in the same query), and its plan's daily and monthly run quotas are not used
up. The plan's `concurrent_pipelines` is enforced by the consumer's run slots (consumer/slots.py), which
wait for a slot rather than refuse.

One parameterized query answers for many orgs at once (`standings`); `decide` turns an org's standing into
a decision with its own reason code. Runs are counted from the append-only run log, so admitting a run
writes no counter: the consumer adds the runs it admitted and has not logged yet (consumer/admission.py).
The quota is soft across processes: two processes checking at the same moment may both pass the last slot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from google.cloud import bigquery

from convergence.pipeline.results import RunStatus
from convergence.settings import Settings
from convergence.tenancy.central import Central, utcnow
from convergence.tenancy.pipeline_configs import disabled_pipelines, gate_branch
from convergence.tenancy.plans import Plans, load_plans
from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug
from convergence.warehouse.runlog import RUNS_TABLE

ALLOWED = "ALLOWED"
INVALID_ORG_SLUG = "INVALID_ORG_SLUG"
ORG_NOT_FOUND = "ORG_NOT_FOUND"
ORG_INACTIVE = "ORG_INACTIVE"
SUBSCRIPTION_NOT_FOUND = "SUBSCRIPTION_NOT_FOUND"
SUBSCRIPTION_SUSPENDED = "SUBSCRIPTION_SUSPENDED"
SUBSCRIPTION_CANCELLED = "SUBSCRIPTION_CANCELLED"
SUBSCRIPTION_INACTIVE = "SUBSCRIPTION_INACTIVE"
PLAN_UNKNOWN = "PLAN_UNKNOWN"
QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
MONTHLY_QUOTA_EXCEEDED = "MONTHLY_QUOTA_EXCEEDED"
PIPELINE_DISABLED = "PIPELINE_DISABLED"
ALREADY_RAN = "ALREADY_RAN"  # a run_once pipeline that already succeeded for the org

_STATUS_REFUSALS = {"SUSPENDED": SUBSCRIPTION_SUSPENDED, "CANCELLED": SUBSCRIPTION_CANCELLED}


@dataclass(frozen=True)
class OrgStanding:
    """An org's rows as the gate reads them; None where the org has no such row."""

    org_status: str | None
    plan: str | None
    subscription_status: str | None
    runs_today: int  # distinct runs in today's run log
    logged: frozenset[str] = frozenset()  # of the run_ids asked about (`standings(mine=, since=)`), those logged
    disabled: frozenset[str] = frozenset()  # pipelines the org disabled (org_pipeline_configs)
    runs_month: int = 0  # distinct runs in this UTC month's run log, today's included


@dataclass(frozen=True)
class GateDecision:
    allowed: bool
    code: str
    message: str
    org_slug: str = ""
    plan: str | None = None
    subscription_status: str | None = None
    runs_today: int | None = None
    daily_limit: int | None = None
    runs_month: int | None = None
    monthly_limit: int | None = None


class OrgGate:
    def __init__(self, client: bigquery.Client, settings: Settings, plans: Plans | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self.central = Central(client, settings)
        self.plans = plans or load_plans(settings)
        self.clock = clock

    def today(self) -> date:
        return self.clock().date()

    def concurrency(self, standing: OrgStanding) -> int | None:
        """The org's plan's `concurrent_pipelines` (None: no plan, or the plan sets none)."""
        plan = self.plans.plan(standing.plan or "")
        return plan.concurrent_pipelines if plan is not None else None

    def check(self, org_slug: str, pipeline: str | None = None) -> GateDecision:
        try:
            org_slug = validate_org_slug(org_slug)
        except InvalidIdentifier as error:
            return GateDecision(False, INVALID_ORG_SLUG, str(error))
        return self.decide(org_slug, self.standings([org_slug])[org_slug], pipeline=pipeline)

    def standings(self, org_slugs: Iterable[str], mine: Iterable[tuple[str, str]] = (),
                  since: datetime | None = None) -> dict[str, OrgStanding]:
        """What the gate decides on, for many orgs in one query (each org's rows matched by its own slug).

        Today's runs are counted from the append-only run log (distinct run_ids with a row that started
        today and is not a refusal), never from a counter table kept by DML. `mine` (org, run_id) pairs and
        `since`: runs of the caller not known to be logged; the answer says which of them the log holds,
        plus every run started at or after `since` (`OrgStanding.logged`), from the same snapshot as the
        count, so a caller adding its unlogged runs never counts one twice.

        Plain filtered rows of the profile and subscription tables, the latest picked here: on the emulator
        this is twice as fast as ranking in SQL, and it returns a few rows per org at most."""
        orgs = sorted({validate_org_slug(org) for org in org_slugs})
        if not orgs:
            return {}
        c = self.central
        day = self.today()
        day_start = datetime.combine(day, time.min, tzinfo=UTC)
        day_end = day_start + timedelta(days=1)
        month_start = day_start.replace(day=1)
        wanted = sorted({str(run_id) for org, run_id in mine if org in orgs})
        # `event_time` prunes to today's partition (the run log is partitioned by it, clustered by org_slug);
        # `start_time` says which day the run belongs to (a run's final row may be written the next day).
        runs_today = (" FROM " + c.ref(RUNS_TABLE) + " WHERE `org_slug` IN UNNEST(@orgs) AND `event_time` >= @day_start"
                      " AND `start_time` >= @day_start AND `start_time` < @day_end AND `status` != @rejected")
        rows = c.queries.rows(
            "SELECT 'profile' AS kind, `org_slug`, `status`, CAST(NULL AS STRING) AS plan, "  # noqa: S608
            "COALESCE(`updated_at`, `created_at`) AS changed_at, CAST(NULL AS INT64) AS runs FROM " +
            c.ref("org_profiles") + " WHERE `org_slug` IN UNNEST(@orgs) UNION ALL "
            "SELECT 'subscription', `org_slug`, `status`, `plan_name`, `updated_at`, CAST(NULL AS INT64) FROM " +
            c.ref("org_subscriptions") + " WHERE `org_slug` IN UNNEST(@orgs) UNION ALL "
            # Every NULL typed: Google's analyzer refused the untyped ones ("Column 4 in UNION ALL has
            # incompatible types: STRING, STRING, NULL, INT64"; the NULL under SELECT DISTINCT became INT64).
            "SELECT 'runs', `org_slug`, CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS TIMESTAMP), "
            "COUNT(DISTINCT `run_id`)" + runs_today + " GROUP BY `org_slug` UNION ALL "
            # The month's runs: `event_time` prunes to this month's partitions, `start_time` picks the month.
            "SELECT 'month', `org_slug`, CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS TIMESTAMP), "
            "COUNT(DISTINCT `run_id`) FROM " + c.ref(RUNS_TABLE) + " WHERE `org_slug` IN UNNEST(@orgs) "
            "AND `event_time` >= @month_start AND `start_time` >= @month_start AND `start_time` < @day_end "
            "AND `status` != @rejected GROUP BY `org_slug` UNION ALL "
            "SELECT DISTINCT 'logged', `org_slug`, `run_id`, CAST(NULL AS STRING), CAST(NULL AS TIMESTAMP), "
            "CAST(NULL AS INT64)" + runs_today +
            " AND (`run_id` IN UNNEST(@mine) OR `start_time` >= @since) UNION ALL " + gate_branch(c),
            {"orgs": orgs, "day_start": day_start, "day_end": day_end, "month_start": month_start,
             "rejected": RunStatus.REJECTED.value,
             "mine": wanted, "since": since or day_end})
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        runs: dict[str, int] = {}
        month: dict[str, int] = {}
        logged: dict[str, set[str]] = {}
        configs: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            org, kind = row["org_slug"], row["kind"]
            if kind == "pipeline":
                configs.setdefault(org, []).append(row)
                continue
            if kind in ("runs", "month"):
                (runs if kind == "runs" else month)[org] = int(row["runs"] or 0)
                continue
            if kind == "logged":
                logged.setdefault(org, set()).add(row["status"])
                continue
            seen = latest.get((org, kind))
            if seen is None or _later(row["changed_at"], seen["changed_at"]):
                latest[(org, kind)] = row
        out = {}
        for org in orgs:
            profile = latest.get((org, "profile")) or {}
            subscription = latest.get((org, "subscription")) or {}
            out[org] = OrgStanding(profile.get("status"), subscription.get("plan"), subscription.get("status"),
                                   runs.get(org, 0), frozenset(logged.get(org, ())),
                                   disabled_pipelines(configs.get(org, ())), month.get(org, 0))
        return out

    def decide(self, org: str, standing: OrgStanding, runs_not_yet_counted: int = 0,
               pipeline: str | None = None) -> GateDecision:
        """The decision for one org; `runs_not_yet_counted`: runs recorded since `standing` was read;
        `pipeline`: refused with PIPELINE_DISABLED when the org disabled it."""
        return self._decide(org, standing.org_status, standing.plan, standing.subscription_status,
                            standing.runs_today + runs_not_yet_counted,
                            pipeline if pipeline in standing.disabled else None,
                            standing.runs_month + runs_not_yet_counted)

    def _decide(self, org: str, org_status: str | None, plan_name: str | None, status: str | None,
                runs: int, disabled: str | None = None, runs_month: int = 0) -> GateDecision:
        if org_status is None:
            return GateDecision(False, ORG_NOT_FOUND, f"org {org} is not onboarded", org)
        if org_status.upper() != "ACTIVE":
            return GateDecision(False, ORG_INACTIVE, f"org {org} is {org_status}", org)
        if status is None:
            return GateDecision(False, SUBSCRIPTION_NOT_FOUND, f"org {org} has no subscription", org)
        status = status.upper()
        if status not in self.plans.allowed_statuses:
            code = _STATUS_REFUSALS.get(status, SUBSCRIPTION_INACTIVE)
            return GateDecision(False, code, f"subscription of org {org} is {status}: pipelines run only for "
                                f"{' or '.join(sorted(self.plans.allowed_statuses))} subscriptions", org,
                                plan_name, status)
        plan = self.plans.plan(plan_name or "")
        if plan is None:
            return GateDecision(False, PLAN_UNKNOWN, f"org {org} is on unknown plan {plan_name!r}", org, plan_name,
                                status)
        if disabled is not None:
            return GateDecision(False, PIPELINE_DISABLED, f"pipeline {disabled} is disabled for org {org} "
                                f"(convergence orgs pipelines enable {org} {disabled})", org, plan.name, status)
        monthly = plan.monthly_pipeline_runs
        if monthly is not None and runs_month >= monthly:
            month = self.today().strftime("%Y-%m")
            return GateDecision(False, MONTHLY_QUOTA_EXCEEDED,
                                f"org {org} has used its monthly quota: {runs_month} of {monthly} pipeline runs "
                                f"in {month} ({plan.name} plan); runs resume on the 1st of next month (UTC)",
                                org, plan.name, status, runs, plan.daily_pipeline_runs, runs_month, monthly)
        if runs >= plan.daily_pipeline_runs:
            return GateDecision(False, QUOTA_EXCEEDED,
                                f"org {org} has used its daily quota: {runs} of {plan.daily_pipeline_runs} pipeline "
                                f"runs on {self.today()} ({plan.name} plan); runs resume tomorrow (UTC)",
                                org, plan.name, status, runs, plan.daily_pipeline_runs, runs_month, monthly)
        return GateDecision(True, ALLOWED, f"{runs} of {plan.daily_pipeline_runs} runs used today", org, plan.name,
                            status, runs, plan.daily_pipeline_runs, runs_month, monthly)

    def succeeded_pipelines(self, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of the (org, pipeline) pairs, those with a successful run in the run log, ever: one query for
        all of them (run_once pipelines). No partition filter can apply (any day counts); the run log is
        clustered by org_slug, so each org's rows are read, not the whole table."""
        wanted = sorted({(validate_org_slug(org), str(pipeline)) for org, pipeline in pairs})
        if not wanted:
            return set()
        c = self.central
        rows = c.queries.rows(
            "SELECT DISTINCT `org_slug`, `pipeline` FROM " + c.ref(RUNS_TABLE) +  # noqa: S608 - validated names
            " WHERE `org_slug` IN UNNEST(@orgs) AND `pipeline` IN UNNEST(@pipelines) "
            "AND CONCAT(`org_slug`, ' ', `pipeline`) IN UNNEST(@keys) AND `status` = @success",
            {"orgs": sorted({org for org, _ in wanted}), "pipelines": sorted({p for _, p in wanted}),
             "keys": [f"{org} {pipeline}" for org, pipeline in wanted], "success": RunStatus.SUCCESS.value})
        return {(row["org_slug"], row["pipeline"]) for row in rows}

    def refresh_usage(self, day: date | None = None) -> int:
        """Rewrite the day's org_usage_quotas counters (run, succeeded, failed) from the run log: one MERGE
        for all orgs. A reporting copy only: the gate never reads it (it counts the log itself).

        Run it from one scheduled job, not from consumers: every 15 minutes is 96 MERGEs a day on
        org_usage_quotas, one at a time. BigQuery ("Quotas and limits" page): at most 2 mutating DML
        statements (UPDATE, DELETE, MERGE) run at once per table and 20 queue; 1,500 table modifications
        per table per day. Its target rows are written by DML (onboarding, this MERGE), never streamed:
        DML cannot change rows still in the streaming buffer ("Transform data with DML" page). Returns the
        rows changed."""
        day = day or self.today()
        now = self.clock()
        day_start = datetime.combine(day, time.min, tzinfo=UTC)
        c = self.central
        return c.queries.dml(
            f"MERGE {c.ref('org_usage_quotas')} AS T USING ("  # noqa: S608 - validated names
            # One row per run first: a run that failed an attempt and then succeeded is a success, and
            # a failed run is one whose latest attempt ended FAILED or TIMEOUT (never both counters).
            "SELECT `org_slug`, COUNT(*) AS runs, COUNTIF(ok) AS succeeded, COUNTIF(NOT ok AND latest IN "
            "UNNEST(@failed)) AS failed, MAX(started) AS last_run FROM (SELECT `org_slug`, `run_id`, "
            "LOGICAL_OR(`status` = @success) AS ok, MAX(`start_time`) AS started, ARRAY_AGG(`status` ORDER BY "
            "`attempt` DESC, `state_rank` DESC, `event_time` DESC LIMIT 1)[OFFSET(0)] AS latest FROM " +
            c.ref(RUNS_TABLE) +
            " WHERE `event_time` >= @day_start AND `start_time` >= @day_start AND `start_time` < @day_end "
            "AND `status` != @rejected GROUP BY `org_slug`, `run_id`) GROUP BY `org_slug`) AS S "
            "ON T.`org_slug` = S.`org_slug` AND T.`usage_date` = @day "
            "WHEN MATCHED THEN UPDATE SET `pipelines_run_today` = S.runs, `pipelines_succeeded_today` = S.succeeded, "
            "`pipelines_failed_today` = S.failed, `last_run_at` = S.last_run, `updated_at` = @now "
            "WHEN NOT MATCHED THEN INSERT (`usage_id`, `org_slug`, `usage_date`, `pipelines_run_today`, "
            "`pipelines_succeeded_today`, `pipelines_failed_today`, `last_run_at`, `created_at`, `updated_at`) "
            "VALUES (CONCAT(S.`org_slug`, '_', @day_text), S.`org_slug`, @day, S.runs, S.succeeded, S.failed, "
            "S.last_run, @now, @now)",
            {"day": day, "day_start": day_start, "day_end": day_start + timedelta(days=1), "now": now,
             "day_text": day.isoformat(), "success": RunStatus.SUCCESS.value, "rejected": RunStatus.REJECTED.value,
             "failed": [RunStatus.FAILED.value, RunStatus.TIMEOUT.value]})


def _later(a: datetime | None, b: datetime | None) -> bool:
    return a is not None and (b is None or a > b)
