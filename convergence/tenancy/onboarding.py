"""Org onboarding (spec 004, step 3) for local use and tests: profile, API key (shown once), subscription,
quota row, KMS key record and the org's dataset `{org_slug}_{env}`.

The profile row is written last: it is what makes an org exist for the gate, so an onboarding that fails
half-way leaves an org that does not run (and a random key nobody was shown) and may simply be repeated.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

import structlog
from google.cloud import bigquery

from convergence.kms import Cipher
from convergence.settings import Settings
from convergence.tenancy.api_keys import OrgApiKeys
from convergence.tenancy.central import Central, utcnow
from convergence.tenancy.plans import Plans, load_plans
from convergence.tenancy.subscriptions import Subscriptions
from convergence.warehouse.client import call_retry
from convergence.warehouse.identifiers import validate_org_slug
from convergence.warehouse.tables import ensure_dataset

log = structlog.get_logger(__name__)

_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,63}")


class OrgAlreadyExists(ValueError):
    code = "ORG_ALREADY_EXISTS"


@dataclass(frozen=True)
class OnboardingResult:
    org_slug: str
    dataset_id: str
    dataset_created: bool
    plan: str
    subscription_status: str
    org_api_key_id: str
    api_key_fingerprint: str
    api_key: str = field(repr=False)  # shown once; only its hash and an encrypted copy are stored


def onboard_org(client: bigquery.Client, settings: Settings, cipher: Cipher, org_slug: str, plan: str = "STARTER",
                *, company_name: str | None = None, admin_email: str | None = None,
                subscription_status: str = "ACTIVE", plans: Plans | None = None) -> OnboardingResult:
    org_slug = validate_org_slug(org_slug)
    plans = plans or load_plans(settings)
    if plans.plan(plan) is None:
        raise ValueError(f"unknown plan {plan!r}; plans: {sorted(plans.plans)}")
    if admin_email is not None and not _EMAIL.fullmatch(admin_email):
        raise ValueError(f"invalid admin email {admin_email!r}")
    central = Central(client, settings)
    if central.queries.rows(f"SELECT `org_slug` FROM {central.ref('org_profiles')} "  # noqa: S608
                            "WHERE `org_slug` = @org_slug LIMIT 1", {"org_slug": org_slug}):
        raise OrgAlreadyExists(f"org {org_slug} is already onboarded")

    dataset = settings.org_dataset(org_slug)
    created = ensure_dataset(client, dataset, location=settings.bigquery_location,
                             description=f"Convergence data of org {org_slug}", retry=call_retry(settings))
    key = OrgApiKeys(client, settings, cipher).issue(org_slug)
    subscriptions = Subscriptions(client, settings, plans)
    subscriptions.create(org_slug, plan, subscription_status)
    plan_limits = plans.plan(plan)
    assert plan_limits is not None
    now = utcnow()
    central.queries.insert(central.ref("org_usage_quotas"), [{
        "usage_id": f"{org_slug}_{now.date().isoformat()}_{uuid.uuid4().hex[:8]}", "org_slug": org_slug,
        "usage_date": now.date(), "pipelines_run_today": 0, "pipelines_succeeded_today": 0,
        "pipelines_failed_today": 0, "daily_limit": plan_limits.daily_pipeline_runs, "created_at": now,
        "updated_at": now,
    }], {"usage_id": "STRING", "org_slug": "STRING", "usage_date": "DATE", "pipelines_run_today": "INT64",
         "pipelines_succeeded_today": "INT64", "pipelines_failed_today": "INT64", "daily_limit": "INT64",
         "created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"})
    central.queries.insert(central.ref("org_kms_keys"), [{
        "kms_key_id": uuid.uuid4().hex, "org_slug": org_slug, "key_name": cipher.key_name,
        "key_purpose": "CREDENTIALS", "is_active": True, "created_at": now,
        "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION" if settings.kms_key_name else "AES_256_GCM",
    }], {"kms_key_id": "STRING", "org_slug": "STRING", "key_name": "STRING", "key_purpose": "STRING",
         "is_active": "BOOL", "created_at": "TIMESTAMP", "algorithm": "STRING"})
    central.queries.insert(central.ref("org_profiles"), [{
        "org_slug": org_slug, "company_name": company_name, "admin_email": admin_email, "status": "ACTIVE",
        "subscription_plan": plan.upper(), "dataset_id": dataset, "environment": settings.environment.value,
        "created_at": now, "updated_at": now,
    }], {"org_slug": "STRING", "company_name": "STRING", "admin_email": "STRING", "status": "STRING",
         "subscription_plan": "STRING", "dataset_id": "STRING", "environment": "STRING", "created_at": "TIMESTAMP",
         "updated_at": "TIMESTAMP"})
    central.audit(org_slug, "ORG_ONBOARDED", resource_type="org", resource_id=org_slug, actor_type="ROOT",
                  details={"plan": plan.upper(), "dataset": dataset, "subscription_status": subscription_status})
    log.info("org onboarded", org_slug=org_slug, plan=plan.upper(), dataset=dataset)
    return OnboardingResult(org_slug, dataset, created, plan.upper(), subscription_status.upper(), key.org_api_key_id,
                            key.fingerprint, key.api_key)
