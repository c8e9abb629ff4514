"""Which orgs a scheduled pipeline runs for (the scheduler's fan-out).

An org is eligible when
- its profile (latest row) is ACTIVE,
- its subscription (latest row) has a status that may run (configs/setup/plans.yml `allowed_statuses`:
  ACTIVE or TRIAL), and
- when the pipeline names an `integration:` (OPENAI, ANTHROPIC, GCP_SA...), it has an active credential
  for that provider (under its name or an alias of the provider registry) in org_integration_credentials that
  is not known to be INVALID.

One parameterized query per integration (and one for pipelines without an integration) per tick: the
fan-out asks once per integration and reuses the answer for every pipeline that needs it. The org gate
still checks each run when it is consumed (quota, status changes since the tick).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from convergence.settings import Settings
from convergence.tenancy.central import Central
from convergence.tenancy.credentials import validate_provider
from convergence.tenancy.plans import Plans, load_plans
from convergence.tenancy.providers import load_registry

log = structlog.get_logger(__name__)


class EligibleOrgs:
    """Callable: eligible(integration or None) -> sorted org slugs. Counts its queries (`calls`)."""

    def __init__(self, client: Any, settings: Settings, plans: Plans | None = None):
        self.central = Central(client, settings)
        self.settings = settings
        self._plans = plans
        self.calls = 0

    @property
    def plans(self) -> Plans:
        """Read on first use: a worker without scheduled pipelines never needs plans.yml for this."""
        if self._plans is None:
            self._plans = load_plans(self.settings)
        return self._plans

    def sql(self, integration: str | None) -> str:
        c = self.central
        # Latest row per org for profiles and subscriptions (rows are updated in place, but a re-onboarded or
        # re-subscribed org may have several: the newest decides, exactly as the gate reads it).
        sql = (
            "WITH profiles AS (SELECT `org_slug`, `status` FROM " + c.ref("org_profiles") +  # noqa: S608
            " QUALIFY ROW_NUMBER() OVER (PARTITION BY `org_slug` "
            "ORDER BY COALESCE(`updated_at`, `created_at`) DESC) = 1), "
            "subscriptions AS (SELECT `org_slug`, `status` FROM " + c.ref("org_subscriptions") +
            " QUALIFY ROW_NUMBER() OVER (PARTITION BY `org_slug` ORDER BY `updated_at` DESC) = 1) "
            "SELECT p.`org_slug` AS org_slug FROM profiles AS p JOIN subscriptions AS s USING (`org_slug`) "
            "WHERE UPPER(p.`status`) = 'ACTIVE' AND UPPER(s.`status`) IN UNNEST(@statuses)"
        )
        if integration is not None:
            sql += (
                " AND EXISTS (SELECT 1 FROM " + c.ref("org_integration_credentials") + " AS cred "  # noqa: S608
                "WHERE cred.`org_slug` = p.`org_slug` AND cred.`provider` IN UNNEST(@providers) "
                "AND cred.`is_active` = TRUE "
                "AND COALESCE(UPPER(cred.`validation_status`), '') != 'INVALID')"
            )
        return sql + " ORDER BY org_slug"

    def __call__(self, integration: str | None) -> list[str]:
        params: dict[str, Any] = {"statuses": sorted(self.plans.allowed_statuses)}
        if integration is not None:
            registry = load_registry(self.settings.configs_dir)
            params["providers"] = list(registry.names(validate_provider(integration)))
        self.calls += 1
        rows = self.central.queries.rows(self.sql(integration), params)
        orgs = [str(row["org_slug"]) for row in rows]
        log.info("eligible orgs", integration=integration, orgs=len(orgs))
        return orgs


def eligible_orgs(client: Any, settings: Settings) -> Callable[[str | None], list[str]]:
    return EligibleOrgs(client, settings)


__all__ = ["EligibleOrgs", "eligible_orgs"]
