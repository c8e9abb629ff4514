"""`convergence orgs dryrun|onboard|status|suspend|resume|set-billing-status` on the local stack: the checks
before onboarding, and status changes that the gate sees at once and the audit log keeps."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from convergence.commands.orgs import orgs

pytestmark = [pytest.mark.emulator]


@pytest.fixture(scope="module")
def platform(local_stack, tmp_path_factory):
    from tests.harness import Platform

    platform = Platform(local_stack, tmp_path_factory.mktemp("orgs"))
    yield platform
    platform.close()


@pytest.fixture
def cli(platform, monkeypatch):
    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: platform.settings)

    def invoke(*args: str):
        return CliRunner().invoke(orgs, list(args))

    return invoke


def audit_actions(platform, org: str) -> list[dict]:
    from convergence.tenancy.central import Central

    central = Central(platform.services.bigquery, platform.settings)
    return central.queries.rows("SELECT `action`, `actor_type`, `details` FROM " + central.ref("org_audit_logs")
                                + " WHERE `org_slug` = @org ORDER BY `created_at`", {"org": org})


def test_dryrun_onboard_status_and_status_changes(platform, cli):
    ready = cli("dryrun", "newco_ops", "--plan", "starter", "--admin-email", "ops@newco.example", "--format", "json")
    assert ready.exit_code == 0, ready.output
    report = json.loads(ready.output)
    assert report["ready"] and {c["name"] for c in report["checks"]} >= {"org, plan and email", "BigQuery",
                                                                          "central tables", "not onboarded yet"}
    bad = cli("dryrun", "newco_ops", "--plan", "GOLD", "--admin-email", "not-an-email")
    assert bad.exit_code == 1 and "FAIL  org, plan and email: unknown plan 'GOLD'" in bad.output

    made = cli("onboard", "newco_ops", "--plan", "STARTER", "--admin-email", "ops@newco.example")
    assert made.exit_code == 0 and "API key (shown once" in made.output, made.output
    again = cli("dryrun", "newco_ops", "--admin-email", "ops@newco.example")
    assert again.exit_code == 1 and "FAIL  not onboarded yet: org newco_ops already exists" in again.output

    shown = json.loads(cli("status", "newco_ops", "--json").output)
    assert (shown["org_status"], shown["plan"], shown["subscription_status"]) == ("ACTIVE", "STARTER", "ACTIVE")
    assert shown["gate"]["allowed"] is True

    assert "ACTIVE -> SUSPENDED (audited)" in cli("suspend", "newco_ops", "--reason", "unpaid").output
    assert "REFUSED SUBSCRIPTION_SUSPENDED" in cli("status", "newco_ops").output  # the gate sees it at once
    assert "SUSPENDED -> ACTIVE" in cli("resume", "newco_ops").output
    assert "ACTIVE -> SUSPENDED" in cli("set-billing-status", "newco_ops", "past_due").output
    unknown = cli("set-billing-status", "newco_ops", "bankrupt")
    assert unknown.exit_code == 1 and "bankrupt" in unknown.output and "Traceback" not in unknown.output
    assert cli("suspend", "nobody_ops").exit_code == 1

    changes = [row for row in audit_actions(platform, "newco_ops") if row["action"] == "SUBSCRIPTION_STATUS_CHANGED"]
    assert [json.loads(r["details"])["to"] for r in changes] == ["SUSPENDED", "ACTIVE", "SUSPENDED"]
    assert {r["actor_type"] for r in changes} == {"OPERATOR"}
    assert json.loads(changes[0]["details"])["reason"] == "unpaid"
