"""Onboarding, org API keys and the org gate on the emulator: each status of the billing-status
table (configs/setup/plans.yml) gives the documented allow/refuse, and quota exhaustion refuses the next
run and says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from convergence.tenancy.api_keys import OrgApiKeys, hash_api_key, org_slug_from_api_key, verify_org_api_key
from convergence.tenancy.gate import OrgGate
from convergence.tenancy.onboarding import OrgAlreadyExists, onboard_org
from convergence.tenancy.plans import load_plans
from convergence.tenancy.subscriptions import Subscriptions
from convergence.warehouse.runlog import RunLog
from tests.support.warehouse import count_rows, unique

pytestmark = pytest.mark.emulator

# Spec 001, "Billing Status Mapping": billing system status -> backend status -> pipeline access.
BILLING_TABLE = [
    ("trialing", "TRIAL", True, "ALLOWED"),
    ("active", "ACTIVE", True, "ALLOWED"),
    ("past_due", "SUSPENDED", False, "SUBSCRIPTION_SUSPENDED"),
    ("canceled", "CANCELLED", False, "SUBSCRIPTION_CANCELLED"),
    ("paused", "SUSPENDED", False, "SUBSCRIPTION_SUSPENDED"),
    ("incomplete", "SUSPENDED", False, "SUBSCRIPTION_SUSPENDED"),
]


def test_onboarding_creates_every_row_and_the_dataset(tenancy_env):
    settings, client, cipher = tenancy_env
    org = unique("acme")
    result = onboard_org(client, settings, cipher, org, "STARTER", company_name="Acme", admin_email="ops@acme.io")
    assert result.dataset_id == f"{org}_dev" and result.dataset_created
    client.get_dataset(f"{client.project}.{org}_dev")
    assert result.api_key.startswith(f"{org}_api_") and len(result.api_key) == len(org) + 5 + 16
    assert result.api_key not in repr(result)  # shown once, never in a repr or log line
    central = f"{client.project}.{settings.central_dataset}"
    for table in ("org_profiles", "org_api_keys", "org_subscriptions", "org_usage_quotas", "org_kms_keys"):
        assert count_rows(client, f"{central}.{table}", "org_slug = @o", o=org) == 1, table
    for action in ("ORG_ONBOARDED", "API_KEY_CREATED"):
        assert count_rows(client, f"{central}.org_audit_logs", "org_slug = @o AND action = @a", o=org, a=action) == 1
    stored = next(iter(client.query(f"SELECT org_api_key_hash, encrypted_org_api_key FROM `{central}.org_api_keys` "
                                     f"WHERE org_slug = '{org}'").result()))
    assert stored["org_api_key_hash"] == hash_api_key(result.api_key)
    assert result.api_key not in stored["encrypted_org_api_key"]
    assert OrgApiKeys(client, settings, cipher).reveal(org) == result.api_key  # the KMS-encrypted copy
    with pytest.raises(OrgAlreadyExists):
        onboard_org(client, settings, cipher, org, "STARTER")
    with pytest.raises(ValueError, match="unknown plan"):
        onboard_org(client, settings, cipher, unique("acme"), "PLATINUM")


def test_org_api_keys_verify_only_for_their_org(tenancy_env):
    settings, client, cipher = tenancy_env
    a, b = unique("orga"), unique("orgb")
    key_a = onboard_org(client, settings, cipher, a, "STARTER").api_key
    key_b = onboard_org(client, settings, cipher, b, "STARTER").api_key
    keys = OrgApiKeys(client, settings, cipher)
    assert verify_org_api_key(client, settings, a, key_a)
    assert not keys.verify(a, key_b) and not keys.verify(b, key_a)
    assert not keys.verify(a, key_a[:-1] + ("x" if key_a[-1] != "x" else "y"))
    assert not keys.verify("bad slug", key_a) and not keys.verify(a, "")
    assert org_slug_from_api_key(key_a) == a and org_slug_from_api_key("nonsense") is None
    assert keys.revoke(a) == 1
    assert not keys.verify(a, key_a)


@pytest.mark.parametrize(("billing", "backend", "allowed", "code"), BILLING_TABLE)
def test_billing_status_table(tenancy_env, billing, backend, allowed, code):
    settings, client, cipher = tenancy_env
    org = unique("bill")
    onboard_org(client, settings, cipher, org, "PROFESSIONAL")
    Subscriptions(client, settings).update(org, billing_status=billing)
    decision = OrgGate(client, settings).check(org)
    assert (decision.allowed, decision.code, decision.subscription_status) == (allowed, code, backend)
    if not allowed:
        assert backend in decision.message and org in decision.message


def test_unknown_statuses_and_orgs_are_refused_with_their_own_codes(tenancy_env):
    settings, client, cipher = tenancy_env
    gate = OrgGate(client, settings)
    assert gate.check(unique("ghost")).code == "ORG_NOT_FOUND"
    assert gate.check("DROP TABLE").code == "INVALID_ORG_SLUG"
    org = unique("odd")
    onboard_org(client, settings, cipher, org, "STARTER")
    central = f"{client.project}.{settings.central_dataset}"
    client.query(f"UPDATE `{central}.org_subscriptions` SET status = 'EXPIRED' WHERE org_slug = '{org}'").result()
    assert gate.check(org).code == "SUBSCRIPTION_INACTIVE"  # anything but ACTIVE/TRIAL is refused
    client.query(f"UPDATE `{central}.org_profiles` SET status = 'SUSPENDED' WHERE org_slug = '{org}'").result()
    assert gate.check(org).code == "ORG_INACTIVE"


def test_quota_exhaustion_refuses_the_next_run_and_says_so(tenancy_env):
    settings, client, cipher = tenancy_env
    org = unique("quota")
    onboard_org(client, settings, cipher, org, "STARTER")
    limit = load_plans(settings).plan("STARTER").daily_pipeline_runs
    gate = OrgGate(client, settings)
    runlog = RunLog(client, settings)
    for used in range(limit):
        decision = gate.check(org)
        assert decision.allowed and decision.runs_today == used
        runlog.run_started(run_id=f"run_{used}", org_slug=org, pipeline="p")  # a started run counts
    refused = gate.check(org)
    assert (refused.allowed, refused.code, refused.runs_today, refused.daily_limit) == (
        False, "QUOTA_EXCEEDED", limit, limit)
    assert f"{limit} of {limit}" in refused.message and "STARTER" in refused.message
    # A new UTC day starts from zero; an upgrade raises the limit at once.
    tomorrow = OrgGate(client, settings, clock=lambda: datetime.now(UTC) + timedelta(days=1))
    assert tomorrow.check(org).allowed
    Subscriptions(client, settings).update(org, plan="SCALE")
    assert gate.check(org).allowed
