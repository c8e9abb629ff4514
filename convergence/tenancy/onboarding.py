"""Org onboarding: profile, API key (shown once), subscription,
quota row, KMS key record and the org's dataset `{org_slug}_{env}`.

The profile row is written last: it is what makes an org exist for the gate, so an onboarding that fails
half-way leaves an org that does not run (and a random key nobody was shown) and may simply be repeated.

`onboard_orgs` onboards many orgs with ONE load job per central table (through the warehouse Writer), so
the table operations per central table per day are the onboarding calls, not the orgs: BigQuery ("Quotas
and limits" page) allows 1,500 table modifications per table per day (load, copy and query jobs and DML
that write it); 10,000 orgs one statement each would be 10,000 on every central table. One org alone is
written with one DML INSERT per table instead: the same single modification, and DML is not among the 5
table metadata update operations per table per 10 seconds that load jobs are, so a burst of single
sign-ups cannot be refused for it. Either way the rows are never streamed: later UPDATEs and MERGEs
(revoking a key, a subscription change, the usage refresh) cannot touch rows in the streaming buffer.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from google.cloud import bigquery

from convergence.kms import Cipher
from convergence.pipeline.errors import ErrorCode
from convergence.schemas.errors import UNKNOWN_ORG
from convergence.settings import Settings
from convergence.tenancy import api_keys, subscriptions
from convergence.tenancy.api_keys import IssuedApiKey, OrgApiKeys
from convergence.tenancy.central import Central, audit_row, utcnow
from convergence.tenancy.plans import Plans, load_plans
from convergence.warehouse.client import call_retry
from convergence.warehouse.identifiers import validate_org_slug
from convergence.warehouse.tables import ensure_dataset
from convergence.warehouse.writer import Writer

log = structlog.get_logger(__name__)

_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,63}")


class OrgAlreadyExists(ValueError):
    code = ErrorCode.ORG_ALREADY_EXISTS


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


_QUOTA_TYPES = {"usage_id": "STRING", "org_slug": "STRING", "usage_date": "DATE", "pipelines_run_today": "INT64",
                "pipelines_succeeded_today": "INT64", "pipelines_failed_today": "INT64", "daily_limit": "INT64",
                "created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"}
_KMS_TYPES = {"kms_key_id": "STRING", "org_slug": "STRING", "key_name": "STRING", "key_purpose": "STRING",
              "is_active": "BOOL", "created_at": "TIMESTAMP", "algorithm": "STRING"}
_PROFILE_TYPES = {"org_slug": "STRING", "company_name": "STRING", "admin_email": "STRING", "status": "STRING",
                  "subscription_plan": "STRING", "dataset_id": "STRING", "environment": "STRING",
                  "created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"}
# Orgs per onboard_orgs call: 10,000 orgs' rows are a few MB per table, far below a load job's limits.
MAX_ORGS_PER_CALL = 10_000


@dataclass(frozen=True)
class OrgSpec:
    """One org to onboard (`onboard_orgs`)."""

    org_slug: str
    plan: str = "STARTER"
    company_name: str | None = None
    admin_email: str | None = None
    subscription_status: str = "ACTIVE"


def onboard_org(client: bigquery.Client, settings: Settings, cipher: Cipher, org_slug: str, plan: str = "STARTER",
                *, company_name: str | None = None, admin_email: str | None = None,
                subscription_status: str = "ACTIVE", plans: Plans | None = None) -> OnboardingResult:
    spec = OrgSpec(org_slug, plan, company_name, admin_email, subscription_status)
    return onboard_orgs(client, settings, cipher, [spec], plans=plans)[0]


def onboard_orgs(client: bigquery.Client, settings: Settings, cipher: Cipher, orgs: Sequence[OrgSpec], *,
                 plans: Plans | None = None) -> list[OnboardingResult]:
    """Onboard every org of `orgs` (all or none refused up front: a bad slug, plan or email, a repeated or
    an already onboarded org). Each central table gets one write for the whole call."""
    plans = plans or load_plans(settings)
    if not 1 <= len(orgs) <= MAX_ORGS_PER_CALL:
        raise ValueError(f"onboard between 1 and {MAX_ORGS_PER_CALL:,} orgs per call, not {len(orgs):,}")
    specs = [_checked(spec, plans) for spec in orgs]
    slugs = [spec.org_slug for spec in specs]
    repeated = sorted(slug for slug, n in Counter(slugs).items() if n > 1)
    if repeated:
        raise ValueError(f"org(s) {repeated[:10]} appear more than once")
    central = Central(client, settings)
    existing = sorted(row["org_slug"] for row in central.queries.rows(
        f"SELECT DISTINCT `org_slug` FROM {central.ref('org_profiles')} "  # noqa: S608 - validated name
        "WHERE `org_slug` IN UNNEST(@orgs)", {"orgs": slugs}))
    if existing:
        names = ", ".join(existing[:10]) + (f" and {len(existing) - 10} more" if len(existing) > 10 else "")
        raise OrgAlreadyExists(f"org {names} is already onboarded" if len(existing) == 1
                               else f"orgs {names} are already onboarded")

    created = {}
    for spec in specs:
        dataset = settings.org_dataset(spec.org_slug)
        created[spec.org_slug] = ensure_dataset(client, dataset, location=settings.bigquery_location,
                                                description=f"Convergence data of org {spec.org_slug}",
                                                retry=call_retry(settings))
    keys = OrgApiKeys(client, settings, cipher)
    subscription_rows = subscriptions.Subscriptions(client, settings, plans)
    now = utcnow()
    issued: list[IssuedApiKey] = []
    tables: dict[str, list[dict[str, object]]] = {
        "org_api_keys": [], "org_subscriptions": [], "org_usage_quotas": [], "org_kms_keys": [], "org_profiles": []}
    for spec in specs:
        plan_limits = plans.plan(spec.plan)
        assert plan_limits is not None
        key, key_row = keys.new_key(spec.org_slug)
        issued.append(key)
        tables["org_api_keys"].append(key_row)
        tables["org_subscriptions"].append(subscription_rows.new_row(spec.org_slug, spec.plan,
                                                                     spec.subscription_status, now=now))
        tables["org_usage_quotas"].append({
            "usage_id": f"{spec.org_slug}_{now.date().isoformat()}_{uuid.uuid4().hex[:8]}", "org_slug": spec.org_slug,
            "usage_date": now.date(), "pipelines_run_today": 0, "pipelines_succeeded_today": 0,
            "pipelines_failed_today": 0, "daily_limit": plan_limits.daily_pipeline_runs, "created_at": now,
            "updated_at": now})
        tables["org_kms_keys"].append({
            "kms_key_id": uuid.uuid4().hex, "org_slug": spec.org_slug, "key_name": cipher.key_name,
            "key_purpose": "CREDENTIALS", "is_active": True, "created_at": now,
            "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION" if settings.kms_key_name else "AES_256_GCM"})
        tables["org_profiles"].append({
            "org_slug": spec.org_slug, "company_name": spec.company_name, "admin_email": spec.admin_email,
            "status": "ACTIVE", "subscription_plan": spec.plan.upper(),
            "dataset_id": settings.org_dataset(spec.org_slug), "environment": settings.environment.value,
            "created_at": now, "updated_at": now})
    types = {"org_api_keys": api_keys.ROW_TYPES, "org_subscriptions": subscriptions.ROW_TYPES,
             "org_usage_quotas": _QUOTA_TYPES, "org_kms_keys": _KMS_TYPES, "org_profiles": _PROFILE_TYPES}
    writer = Writer(client, settings) if len(specs) > 1 else None
    for table, rows in tables.items():  # org_profiles last: it is what makes the orgs exist
        _write(central, writer, table, rows, types[table])

    audit = []
    for spec, key in zip(specs, issued, strict=True):
        audit.append(audit_row(spec.org_slug, "API_KEY_CREATED", resource_type="org_api_key",
                               resource_id=key.org_api_key_id, actor_type="ROOT"))
        audit.append(audit_row(spec.org_slug, "ORG_ONBOARDED", resource_type="org", resource_id=spec.org_slug,
                               actor_type="ROOT", details={"plan": spec.plan.upper(),
                                                           "dataset": settings.org_dataset(spec.org_slug),
                                                           "subscription_status": spec.subscription_status}))
    central.audit_rows(audit)
    log.info("orgs onboarded", orgs=len(specs), first=slugs[0], writes="load" if writer else "dml")
    return [OnboardingResult(spec.org_slug, settings.org_dataset(spec.org_slug), created[spec.org_slug],
                             spec.plan.upper(), spec.subscription_status.upper(), key.org_api_key_id,
                             key.fingerprint, key.api_key) for spec, key in zip(specs, issued, strict=True)]


def _checked(spec: OrgSpec, plans: Plans) -> OrgSpec:
    org_slug = validate_org_slug(spec.org_slug)
    if org_slug == UNKNOWN_ORG:  # untrusted rejections are filed there: no org may read them as its own
        raise ValueError(f"org slug {UNKNOWN_ORG!r} is reserved")
    if plans.plan(spec.plan) is None:
        raise ValueError(f"unknown plan {spec.plan!r}; plans: {sorted(plans.plans)}")
    if spec.admin_email is not None and not _EMAIL.fullmatch(spec.admin_email):
        raise ValueError(f"invalid admin email {spec.admin_email!r}")
    return OrgSpec(org_slug, spec.plan, spec.company_name, spec.admin_email, spec.subscription_status)


def _write(central: Central, writer: Writer | None, table: str, rows: list[dict[str, Any]],
           types: dict[str, str]) -> None:
    if writer is None:
        central.queries.insert(central.ref(table), rows, types)
        return
    # key_columns: the Writer never streams an append that names keys (one load job for all the rows).
    writer.write(central.dataset, table, rows, mode="append", key_columns=["org_slug"])
