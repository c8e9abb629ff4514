"""The org gate, run before every pipeline: the org exists and is active, its subscription status may run
(ACTIVE or TRIAL; spec 001's billing-status table), and its plan's daily run quota is not used up.

One parameterized query answers for many orgs at once (`standings`); `decide` turns an org's standing into
a decision with its own reason code. The quota is soft: two runs checked at the same moment may both pass
the last slot (counting happens in `record_runs`, which the consumer batches: consumer/admission.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

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
class OrgStanding:
    """An org's rows as the gate reads them; None where the org has no such row."""

    org_status: str | None
    plan: str | None
    subscription_status: str | None
    runs_today: int


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
        return self.decide(org_slug, self.standings([org_slug])[org_slug])

    def standings(self, org_slugs: Iterable[str]) -> dict[str, OrgStanding]:
        """What the gate decides on, for many orgs in one query (each org's rows matched by its own slug).

        Plain filtered rows of the three tables, the latest picked here: on the emulator this is twice as
        fast as ranking in SQL, and it returns a few rows per org at most."""
        orgs = sorted({validate_org_slug(org) for org in org_slugs})
        if not orgs:
            return {}
        c = self.central
        rows = c.queries.rows(
            "SELECT 'profile' AS kind, `org_slug`, `status`, CAST(NULL AS STRING) AS plan, "  # noqa: S608
            "COALESCE(`updated_at`, `created_at`) AS changed_at, CAST(NULL AS INT64) AS runs FROM " + c.ref("org_profiles") +
            " WHERE `org_slug` IN UNNEST(@orgs) UNION ALL "
            "SELECT 'subscription', `org_slug`, `status`, `plan_name`, `updated_at`, NULL FROM " +
            c.ref("org_subscriptions") + " WHERE `org_slug` IN UNNEST(@orgs) UNION ALL "
            "SELECT 'usage', `org_slug`, NULL, NULL, NULL, `pipelines_run_today` FROM " + c.ref("org_usage_quotas") +
            " WHERE `org_slug` IN UNNEST(@orgs) AND `usage_date` = @day",
            {"orgs": orgs, "day": self.today()})
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        runs: dict[str, int] = {}
        for row in rows:
            org, kind = row["org_slug"], row["kind"]
            if kind == "usage":
                # MAX, not SUM: should a race ever create two counter rows for a day, both are incremented.
                runs[org] = max(runs.get(org, 0), int(row["runs"] or 0))
                continue
            seen = latest.get((org, kind))
            if seen is None or _later(row["changed_at"], seen["changed_at"]):
                latest[(org, kind)] = row
        out = {}
        for org in orgs:
            profile = latest.get((org, "profile")) or {}
            subscription = latest.get((org, "subscription")) or {}
            out[org] = OrgStanding(profile.get("status"), subscription.get("plan"), subscription.get("status"),
                                   runs.get(org, 0))
        return out

    def decide(self, org: str, standing: OrgStanding, runs_not_yet_counted: int = 0) -> GateDecision:
        """The decision for one org; `runs_not_yet_counted`: runs recorded since `standing` was read."""
        return self._decide(org, standing.org_status, standing.plan, standing.subscription_status,
                            standing.runs_today + runs_not_yet_counted)

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
        self.record_runs({org_slug: 1})

    def record_runs(self, counts: Mapping[str, int]) -> None:
        """Add runs to today's counters of several orgs in one MERGE (one row per org and day)."""
        counts = {validate_org_slug(org): int(n) for org, n in counts.items() if int(n) > 0}
        if not counts:
            return
        now = self.clock()
        day = now.date()
        orgs = sorted(counts)
        self.central.queries.dml(
            f"MERGE {self.central.ref('org_usage_quotas')} AS T "  # noqa: S608 - validated name
            "USING (SELECT org AS org_slug, n FROM UNNEST(@orgs) AS org WITH OFFSET i "
            "JOIN UNNEST(@counts) AS n WITH OFFSET j ON i = j) AS S "
            "ON T.`org_slug` = S.org_slug AND T.`usage_date` = @day "
            "WHEN MATCHED THEN UPDATE SET `pipelines_run_today` = T.`pipelines_run_today` + S.n, "
            "`last_run_at` = @now, `updated_at` = @now "
            "WHEN NOT MATCHED THEN INSERT (`usage_id`, `org_slug`, `usage_date`, `pipelines_run_today`, "
            "`pipelines_succeeded_today`, `pipelines_failed_today`, `last_run_at`, `created_at`, `updated_at`) "
            "VALUES (CONCAT(S.org_slug, '_', @day_text, '_', @nonce), S.org_slug, @day, S.n, 0, 0, @now, @now, "
            "@now)",
            {"orgs": orgs, "counts": [counts[org] for org in orgs], "day": day, "now": now,
             "day_text": day.isoformat(), "nonce": uuid.uuid4().hex[:8]})


def _later(a: datetime | None, b: datetime | None) -> bool:
    return a is not None and (b is None or a > b)
