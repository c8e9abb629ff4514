"""The org gate, run before every pipeline: the org exists and is active, its subscription status may run
(ACTIVE or TRIAL; spec 001's billing-status table), and its plan's daily run quota is not used up.

One parameterized query per check. Each refusal has its own reason code. The quota is soft: two runs
checked at the same moment may both pass the last slot (counting happens in `record_run`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from google.cloud import bigquery

from settings import Settings
from tenancy.central import Central, utcnow
from tenancy.plans import Plans, load_plans
from warehouse.identifiers import InvalidIdentifier, validate_org_slug

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

_STATUS_REFUSALS = {"SUSPENDED": SUBSCRIPTION_SUSPENDED, "CANCELLED": SUBSCRIPTION_CANCELLED}


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


class OrgGate:
    def __init__(self, client: bigquery.Client, settings: Settings, plans: Plans | None = None,
                 clock: Callable[[], datetime] = utcnow):
        self.central = Central(client, settings)
        self.plans = plans or load_plans(settings)
        self.clock = clock

    def today(self) -> date:
        return self.clock().date()

    def check(self, org_slug: str) -> GateDecision:
        try:
            org_slug = validate_org_slug(org_slug)
        except InvalidIdentifier as error:
            return GateDecision(False, INVALID_ORG_SLUG, str(error))
        c = self.central
        rows = c.queries.rows(
            "WITH profile AS (SELECT `status` FROM " + c.ref("org_profiles") +  # noqa: S608 - validated names
            " WHERE `org_slug` = @org_slug ORDER BY COALESCE(`updated_at`, `created_at`) DESC LIMIT 1), "
            "subscription AS (SELECT `plan_name`, `status` FROM " + c.ref("org_subscriptions") +
            " WHERE `org_slug` = @org_slug ORDER BY `updated_at` DESC LIMIT 1), "
            # MAX, not SUM: should a race ever create two counter rows for a day, both are incremented.
            "usage AS (SELECT MAX(`pipelines_run_today`) AS runs FROM " + c.ref("org_usage_quotas") +
            " WHERE `org_slug` = @org_slug AND `usage_date` = @day) "
            "SELECT (SELECT `status` FROM profile) AS org_status, (SELECT `plan_name` FROM subscription) AS plan, "
            "(SELECT `status` FROM subscription) AS sub_status, (SELECT runs FROM usage) AS runs_today",
            {"org_slug": org_slug, "day": self.today()})
        row = rows[0] if rows else {}
        return self._decide(org_slug, row.get("org_status"), row.get("plan"), row.get("sub_status"),
                            int(row.get("runs_today") or 0))

    def _decide(self, org: str, org_status: str | None, plan_name: str | None, status: str | None,
                runs: int) -> GateDecision:
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
        if runs >= plan.daily_pipeline_runs:
            return GateDecision(False, QUOTA_EXCEEDED,
                                f"org {org} has used its daily quota: {runs} of {plan.daily_pipeline_runs} pipeline "
                                f"runs on {self.today()} ({plan.name} plan); runs resume tomorrow (UTC)",
                                org, plan.name, status, runs, plan.daily_pipeline_runs)
        return GateDecision(True, ALLOWED, f"{runs} of {plan.daily_pipeline_runs} runs used today", org, plan.name,
                            status, runs, plan.daily_pipeline_runs)

    def record_run(self, org_slug: str) -> None:
        """Count one run in today's org_usage_quotas row (created on the day's first run)."""
        org_slug = validate_org_slug(org_slug)
        now = self.clock()
        day = now.date()
        self.central.queries.dml(
            f"MERGE {self.central.ref('org_usage_quotas')} AS T "  # noqa: S608 - validated name
            "USING (SELECT @org_slug AS org_slug, @day AS usage_date) AS S "
            "ON T.`org_slug` = S.org_slug AND T.`usage_date` = S.usage_date "
            "WHEN MATCHED THEN UPDATE SET `pipelines_run_today` = T.`pipelines_run_today` + 1, "
            "`last_run_at` = @now, `updated_at` = @now "
            "WHEN NOT MATCHED THEN INSERT (`usage_id`, `org_slug`, `usage_date`, `pipelines_run_today`, "
            "`pipelines_succeeded_today`, `pipelines_failed_today`, `last_run_at`, `created_at`, `updated_at`) "
            "VALUES (@usage_id, @org_slug, @day, 1, 0, 0, @now, @now, @now)",
            {"org_slug": org_slug, "day": day, "now": now,
             "usage_id": f"{org_slug}_{day.isoformat()}_{uuid.uuid4().hex[:8]}"})
