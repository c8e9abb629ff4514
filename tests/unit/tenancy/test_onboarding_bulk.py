"""Onboarding many orgs on the emulator: one load job per central table for the whole call (no DML, no
streaming into the tables later DML changes), every org complete and admitted by the gate; all or none
when one is already onboarded; a single org is still one DML INSERT per table and no load job."""

from __future__ import annotations

from collections import Counter

import pytest

from convergence.tenancy.api_keys import OrgApiKeys
from convergence.tenancy.gate import OrgGate
from convergence.tenancy.onboarding import OrgAlreadyExists, OrgSpec, onboard_org, onboard_orgs
from tests.support.warehouse import count_rows, unique
from tests.unit.consumer.test_admission import dml, recorded

pytestmark = pytest.mark.emulator

SEEDED = ("org_api_keys", "org_subscriptions", "org_usage_quotas", "org_kms_keys", "org_profiles")


def counted_loads(client) -> Counter[str]:
    """Load jobs this client instance starts from now on, by destination table."""
    loads: Counter[str] = Counter()
    load = client.load_table_from_file

    def counting(file, destination, *args, **kwargs):
        loads[str(destination).rsplit(".", 1)[-1]] += 1
        return load(file, destination, *args, **kwargs)

    client.load_table_from_file = counting
    return loads


def test_many_orgs_are_one_load_job_per_central_table(tenancy_env):
    settings, client, cipher = tenancy_env
    loads, sent = counted_loads(client), recorded(client)
    specs = [OrgSpec(unique("bulk"), "SCALE" if i % 2 else "STARTER",
                     subscription_status="TRIAL" if i == 3 else "ACTIVE") for i in range(40)]
    results = onboard_orgs(client, settings, cipher, specs)

    assert loads == Counter(dict.fromkeys(SEEDED, 1))  # 40 orgs: one load per table (was 40 DML INSERTs each)
    assert dml(sent) == 0 and not any(sql.lstrip().upper().startswith("INSERT") for sql in sent)
    central = f"{client.project}.{settings.central_dataset}"
    orgs = [s.org_slug for s in specs]
    for table in SEEDED:
        assert count_rows(client, f"{central}.{table}", "org_slug IN UNNEST(@o)", o=orgs) == 40, table
    assert [r.org_slug for r in results] == orgs and all(r.dataset_created for r in results)
    gate, keys = OrgGate(client, settings), OrgApiKeys(client, settings, cipher)
    decisions = {org: gate.decide(org, standing) for org, standing in gate.standings(orgs).items()}
    assert all(d.allowed for d in decisions.values()), [d for d in decisions.values() if not d.allowed]
    assert decisions[orgs[3]].subscription_status == "TRIAL" and decisions[orgs[1]].plan == "SCALE"
    assert keys.verify(orgs[7], results[7].api_key) and not keys.verify(orgs[7], results[8].api_key)
    assert count_rows(client, f"{central}.org_audit_logs", "org_slug IN UNNEST(@o) AND action = 'ORG_ONBOARDED'",
                      o=orgs) == 40
    # Rows written by load jobs, not streamed: a later UPDATE (revoking a key) is allowed on them at once.
    assert keys.revoke(orgs[0]) == 1


def test_an_already_onboarded_org_refuses_the_whole_call(tenancy_env):
    settings, client, cipher = tenancy_env
    old, new = unique("bulk"), unique("bulk")
    onboard_org(client, settings, cipher, old, "STARTER")
    with pytest.raises(OrgAlreadyExists, match=old):
        onboard_orgs(client, settings, cipher, [OrgSpec(new), OrgSpec(old)])
    central = f"{client.project}.{settings.central_dataset}"
    for table in SEEDED:  # nothing of the new org was written
        assert count_rows(client, f"{central}.{table}", "org_slug = @o", o=new) == 0, table
    with pytest.raises(ValueError, match="more than once"):
        onboard_orgs(client, settings, cipher, [OrgSpec(new), OrgSpec(new)])
    with pytest.raises(ValueError, match="unknown plan"):
        onboard_orgs(client, settings, cipher, [OrgSpec(new), OrgSpec(unique("bulk"), "PLATINUM")])
    # Repeating the onboarding of what was refused: done once, then refused again.
    assert onboard_orgs(client, settings, cipher, [OrgSpec(new)])[0].org_slug == new
    for table in SEEDED:
        assert count_rows(client, f"{central}.{table}", "org_slug = @o", o=new) == 1, table
    with pytest.raises(OrgAlreadyExists):
        onboard_org(client, settings, cipher, new)


def test_one_org_is_one_dml_insert_per_table_and_no_load_job(tenancy_env):
    settings, client, cipher = tenancy_env
    loads, sent = counted_loads(client), recorded(client)
    onboard_org(client, settings, cipher, unique("solo"), "STARTER")
    inserts = Counter(sql.split("`")[1].rsplit(".", 1)[-1] for sql in sent
                      if sql.lstrip().upper().startswith("INSERT"))
    assert inserts == Counter(dict.fromkeys(SEEDED, 1)) and not loads and dml(sent) == 0
