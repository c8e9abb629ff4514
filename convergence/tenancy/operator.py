"""What an operator does to an org in a real deployment: check before onboarding (`dryrun`), onboard, read
its standing, and change its subscription status. Every change writes `org_audit_logs`.

Status changes go through the billing-status table in configs/setup/plans.yml (`past_due` -> SUSPENDED,
...), or set the backend status directly (suspend -> SUSPENDED, resume -> ACTIVE).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions

from convergence.tenancy.central import Central
from convergence.tenancy.onboarding import _EMAIL, OrgSpec, _checked
from convergence.tenancy.plans import load_plans
from convergence.warehouse.bootstrap import CENTRAL_TABLES
from convergence.warehouse.identifiers import InvalidIdentifier

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices

OPERATOR = "OPERATOR"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def dryrun(services: PlatformServices, org: str, plan: str, admin_email: str | None) -> list[Check]:
    """The checks onboarding would fail on, without creating anything."""
    settings = services.settings
    plans = load_plans(settings)
    checks: list[Check] = []
    try:
        _checked(OrgSpec(org, plan.upper(), None, admin_email), plans)
        checks.append(Check("org, plan and email", True, f"{org}: plan {plan.upper()}"))
    except (InvalidIdentifier, ValueError) as error:
        checks.append(Check("org, plan and email", False, str(error)))
    if admin_email is None:
        checks.append(Check("admin email", False, "no admin email: the org would hear about no failure"))
    elif not _EMAIL.fullmatch(admin_email):
        checks.append(Check("admin email", False, f"invalid admin email {admin_email!r}"))
    client = services.bigquery
    central = Central(client, settings)
    try:
        present = {t.table_id for t in client.list_tables(f"{client.project}.{settings.central_dataset}")}
    except exceptions.NotFound:
        checks.append(Check("central tables", False, f"dataset {settings.central_dataset} does not exist: run "
                                                     "`convergence bootstrap`"))
        return checks
    except exceptions.GoogleAPICallError as error:
        checks.append(Check("BigQuery", False, f"{type(error).__name__}: {str(error)[:200]}"))
        return checks
    checks.append(Check("BigQuery", True, f"project {client.project} answers"))
    missing = sorted(set(CENTRAL_TABLES) - present)
    checks.append(Check("central tables", not missing, f"missing: {', '.join(missing)} (run `convergence "
                        "bootstrap`)" if missing else f"all {len(CENTRAL_TABLES)} present"))
    if not missing and not any(c.name == "org, plan and email" and not c.ok for c in checks):
        exists = central.queries.rows("SELECT COUNT(*) AS n FROM " + central.ref("org_profiles") +  # noqa: S608
                                      " WHERE `org_slug` = @org", {"org": org})[0]["n"]
        checks.append(Check("not onboarded yet", exists == 0, f"org {org} already exists" if exists else "new"))
    return checks


def standing(services: PlatformServices, org: str) -> dict[str, Any]:
    """Profile, subscription and today's quota, as the gate sees them."""
    gate = services.gate
    decision = gate.check(org)
    standing = gate.standings([org])[org]
    return {"org_slug": org, "org_status": standing.org_status, "plan": standing.plan,
            "subscription_status": standing.subscription_status, "runs_today": standing.runs_today,
            "gate": {"allowed": decision.allowed, "code": decision.code, "message": decision.message}}


def change_status(services: PlatformServices, org: str, *, status: str | None = None, billing_status: str | None = None,
                  reason: str | None = None, actor: str | None = None) -> dict[str, Any]:
    """Set the org's subscription status (directly or through a billing status), audited."""
    from convergence.tenancy.subscriptions import Subscriptions

    before = standing(services, org)
    if before["org_status"] is None:
        raise ValueError(f"org {org} is not onboarded")
    changed = Subscriptions(services.bigquery, services.settings).update(org, status=status,
                                                                         billing_status=billing_status)
    if changed == 0:
        raise ValueError(f"org {org} has no subscription row to change")
    after = standing(services, org)
    details = {"from": before["subscription_status"], "to": after["subscription_status"],
               "billing_status": billing_status, "reason": reason}
    Central(services.bigquery, services.settings).audit(
        org, "SUBSCRIPTION_STATUS_CHANGED", resource_type="subscription", resource_id=org,
        details={k: v for k, v in details.items() if v is not None}, actor_type=OPERATOR, actor_id=actor)
    return {"org_slug": org, **details}


def checks_as_dicts(checks: list[Check]) -> list[dict[str, Any]]:
    return [asdict(check) for check in checks]
