"""Subscription rows: created at onboarding, changed when the billing system reports a new status.

The billing system's lower-case status is mapped to the backend status by configs/setup/plans.yml
(trialing -> TRIAL, active -> ACTIVE, past_due/paused/incomplete -> SUSPENDED, canceled ->
CANCELLED). Rows are written by DML so later status changes can UPDATE them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from google.cloud import bigquery

from convergence.settings import Settings
from convergence.tenancy.central import Central, utcnow
from convergence.tenancy.plans import KNOWN_STATUSES, Plans, load_plans
from convergence.warehouse.identifiers import validate_org_slug

TABLE = "org_subscriptions"
ROW_TYPES = {"subscription_id": "STRING", "org_slug": "STRING", "plan_name": "STRING", "status": "STRING",
          "billing_status": "STRING", "trial_ends_at": "TIMESTAMP", "current_period_start": "TIMESTAMP",
          "created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"}


class Subscriptions:
    def __init__(self, client: bigquery.Client, settings: Settings, plans: Plans | None = None):
        self.central = Central(client, settings)
        self.plans = plans or load_plans(settings)

    def _check(self, plan: str | None, status: str | None) -> tuple[str | None, str | None]:
        if plan is not None:
            if self.plans.plan(plan) is None:
                raise ValueError(f"unknown plan {plan!r}; plans: {sorted(self.plans.plans)}")
            plan = plan.upper()
        if status is not None:
            status = status.upper()
            if status not in KNOWN_STATUSES:
                raise ValueError(f"unknown subscription status {status!r}; one of {list(KNOWN_STATUSES)}")
        return plan, status

    def create(self, org_slug: str, plan: str, status: str = "ACTIVE", *, now: datetime | None = None) -> str:
        row = self.new_row(org_slug, plan, status, now=now)
        self.central.queries.insert(self.central.ref(TABLE), [row], ROW_TYPES)
        return str(row["subscription_id"])

    def new_row(self, org_slug: str, plan: str, status: str = "ACTIVE", *,
                now: datetime | None = None) -> dict[str, object]:
        """The org_subscriptions row of a new subscription, not yet written (onboarding loads many at once)."""
        org_slug = validate_org_slug(org_slug)
        checked_plan, checked_status = self._check(plan, status)
        now = now or utcnow()
        trial_end = now + timedelta(days=self.plans.trial_days) if checked_status == "TRIAL" else None
        return {
            "subscription_id": uuid.uuid4().hex, "org_slug": org_slug, "plan_name": checked_plan,
            "status": checked_status, "billing_status": None, "trial_ends_at": trial_end,
            "current_period_start": now, "created_at": now, "updated_at": now,
        }

    def update(self, org_slug: str, *, status: str | None = None, plan: str | None = None,
               billing_status: str | None = None) -> int:
        """Change the org's subscription; `billing_status` (e.g. `past_due`) sets the mapped status too."""
        org_slug = validate_org_slug(org_slug)
        if billing_status is not None:
            mapped = self.plans.backend_status(billing_status)
            if status is not None and status.upper() != mapped:
                raise ValueError(f"billing status {billing_status!r} maps to {mapped}, not {status}")
            status = mapped
        plan, status = self._check(plan, status)
        sets = ["`updated_at` = @now"]
        params: dict[str, object] = {"org_slug": org_slug, "now": utcnow()}
        for column, value in (("status", status), ("plan_name", plan), ("billing_status", billing_status)):
            if value is not None:
                sets.append(f"`{column}` = @{column}")
                params[column] = value
        return self.central.queries.dml(
            f"UPDATE {self.central.ref(TABLE)} SET {', '.join(sets)} WHERE `org_slug` = @org_slug", params)  # noqa: S608
