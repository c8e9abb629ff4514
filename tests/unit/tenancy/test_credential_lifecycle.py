"""Provider registry and credential lifecycle on the local stack (BigQuery emulator, local keyring, the
OpenAI/Anthropic/GCP stand-ins): aliases, `convergence credentials` from stdin, validation verdicts on the
credential row, the store -> validate -> seed pipeline, and a 401 during a run marking the credential
INVALID so the next tick leaves that org's pipelines for the provider out. Secrets never in output or logs."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
import structlog
from click.testing import CliRunner

from convergence.devstack.providers.anthropic_server import AnthropicStandIn
from convergence.devstack.providers.gcp_server import GcpStandIn
from convergence.devstack.providers.openai_server import OpenAIStandIn
from convergence.devstack.providers.slack_server import SlackStandIn
from convergence.tenancy.providers import ProviderRegistryError, parse_registry, provider_registry_problems
from tests import harness
from tests.harness import Platform
from tests.support.llm import CONFIGS

OPENAI_KEY = "sk-admin-lifecycle-5f0e9d8c7b6a5948"
ANTHROPIC_KEY = "sk-ant-admin01-lifecycle-a1b2c3d4e5f6"
BAD_KEY = "sk-admin-lifecycle-wrong-0000111122"
DAY = "2026-03-02"


# ---- the registry file -----------------------------------------------------------------------------


def test_registry_resolves_aliases_and_base_url_settings():
    from convergence.settings.model import load_settings
    from convergence.tenancy.providers import load_registry

    registry = load_registry(CONFIGS)
    assert registry.canonical("CLAUDE") == "ANTHROPIC" and registry.canonical("claude") == "ANTHROPIC"
    assert registry.canonical("GCP") == "GCP_SA" and registry.canonical("VENDOR_API") == "VENDOR_API"
    assert registry.names("ANTHROPIC")[0] == "ANTHROPIC" and "CLAUDE" in registry.names("ANTHROPIC")
    settings = load_settings(anthropic_base_url="http://127.0.0.1:9", gcp_api_url_template="https://{service}.x")
    assert registry.get("CLAUDE").url(settings) == "http://127.0.0.1:9"
    assert registry.get("GCP_SA").url(settings) == "https://cloudbilling.x"
    assert registry.get("ANTHROPIC").auth_headers("k")["x-api-key"] == "k"
    assert registry.get("OPENAI").auth_headers("k")["Authorization"] == "Bearer k"


def test_validate_reports_a_broken_registry(tmp_path):
    good = {"providers": {"OPENAI": {"aliases": ["CLAUDE"], "base_url": "https://a", "auth": {
        "type": "header", "header": "Authorization"}}}}
    assert parse_registry(good).canonical("CLAUDE") == "OPENAI"
    with pytest.raises(ProviderRegistryError, match="CLAUDE is already used by OPENAI"):
        parse_registry({"providers": {**good["providers"], "ANTHROPIC": {
            "aliases": ["CLAUDE"], "base_url": "https://b", "auth": {"type": "header", "header": "x-api-key"}}}})
    (tmp_path / "system").mkdir()
    (tmp_path / "system" / "providers.yml").write_text("providers:\n  OPENAI:\n    base_url: ftp://x\n")
    problems = provider_registry_problems(tmp_path)
    assert len(problems) == 1 and "base_url" in problems[0]
    assert provider_registry_problems(CONFIGS) == []


def test_convergence_validate_checks_the_registry(tmp_path, monkeypatch):
    from convergence.cli import cli
    from convergence.settings.model import load_settings

    (tmp_path / "system").mkdir()
    (tmp_path / "system" / "providers.yml").write_text(
        "providers:\n  OPENAI:\n    base_url: https://a\n    auth: {type: header, header: Authorization}\n"
        "  CLAUDE_TOO:\n    aliases: [OPENAI]\n    base_url: https://b\n    auth: {type: header, header: x}\n")
    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: load_settings())
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1 and "name OPENAI is already used by OPENAI" in result.output


# ---- on the local stack ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(local_stack, tmp_path_factory):
    openai = OpenAIStandIn(admin_keys=(OPENAI_KEY,))
    anthropic = AnthropicStandIn(admin_keys=(ANTHROPIC_KEY,))
    gcp = GcpStandIn()
    slack = SlackStandIn()
    for server in (openai, anthropic, gcp, slack):
        server.start_in_thread()
    root = tmp_path_factory.mktemp("credential_lifecycle")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(harness, "make_configs_dir", lambda _root: CONFIGS)
        platform = Platform(local_stack, root, local_keyring_path=root / "keyring.key",
                            openai_base_url=openai.base_url, anthropic_base_url=anthropic.base_url,
                            gcp_api_url_template=gcp.base_url)
    platform.stand_ins = {"openai": openai, "anthropic": anthropic, "gcp": gcp, "slack": slack}
    yield platform
    platform.close()
    for server in (openai, anthropic, gcp, slack):
        server.stop_thread()


def new_org(world, prefix: str) -> str:
    org = f"{prefix}_{uuid.uuid4().hex[:6]}"
    world.onboard(org)
    return org


def credential_row(world, org: str, provider: str) -> dict:
    central = world.services.credentials.central
    rows = central.queries.rows(
        "SELECT * FROM " + central.ref("org_integration_credentials") +  # noqa: S608
        " WHERE `org_slug` = @org AND `provider` = @provider AND `is_active` = TRUE",
        {"org": org, "provider": provider})
    assert len(rows) == 1, rows
    return rows[0]


def cli(world, monkeypatch, args: list[str], stdin: str | None = None):
    from convergence.commands.credentials import credentials

    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: world.settings)
    return CliRunner().invoke(credentials, args, input=stdin)


@pytest.mark.emulator
def test_a_key_stored_as_claude_is_found_for_anthropic(world):
    from convergence.extractors.credentials import resolve_credential
    from convergence.pipeline import RunContext
    from convergence.tenancy.eligibility import EligibleOrgs

    store = world.services.credentials
    org = new_org(world, "alias")
    # A row written under the alias itself (as before the registry): a store that knows no aliases writes it.
    real = store.registry
    store.registry = parse_registry({"providers": {"OPENAI": {"base_url": "https://a", "auth": {
        "type": "header", "header": "Authorization"}}}})
    try:
        store.put(org, "CLAUDE", ANTHROPIC_KEY, validation_status="VALID")
    finally:
        store.registry = real
    assert credential_row(world, org, "CLAUDE")["provider"] == "CLAUDE"
    assert store.get(org, "ANTHROPIC") == ANTHROPIC_KEY
    context = RunContext(org_slug=org, run_id="r1", pipeline_id="p", services=world.services)
    found = asyncio.run(resolve_credential(context, "ANTHROPIC"))
    assert found.value == ANTHROPIC_KEY and found.source == "org_integration_credentials"
    assert org in EligibleOrgs(world.services.bigquery, world.settings)("ANTHROPIC")
    # Storing through the alias now writes the canonical name and retires the alias row.
    store.put(org, "claude", ANTHROPIC_KEY)
    assert credential_row(world, org, "ANTHROPIC")["validation_status"] == "PENDING"
    assert [r["provider"] for r in store.providers(org)] == ["ANTHROPIC"]


@pytest.mark.emulator
def test_set_from_stdin_validates_and_list_shows_no_secret(world, monkeypatch):
    org = new_org(world, "cli_set")
    with structlog.testing.capture_logs() as logs:
        result = cli(world, monkeypatch, ["set", org, "OPENAI", "--json"], stdin=OPENAI_KEY + "\n")
        listed = cli(world, monkeypatch, ["list", org])
        listed_json = cli(world, monkeypatch, ["list", org, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["validation_status"] == "VALID" and data["fingerprint"].startswith("sha256:")
    row = credential_row(world, org, "OPENAI")
    assert row["validation_status"] == "VALID" and row["validation_error"] is None
    assert row["last_validated_at"] is not None
    assert listed.exit_code == 0 and "OPENAI" in listed.output and data["fingerprint"] in listed.output
    assert json.loads(listed_json.output)[0]["validation_status"] == "VALID"
    # the stand-in saw exactly the cheapest call: one project of the admin API's list
    for text in (result.output, listed.output, listed_json.output, repr(logs), repr(row)):
        assert OPENAI_KEY not in text and OPENAI_KEY[-8:] not in text
    validated = cli(world, monkeypatch, ["validate", org, "openai"])
    assert validated.exit_code == 0 and "OPENAI credential of " + org + ": VALID" in validated.output
    # a secret is never an argument
    refused = cli(world, monkeypatch, ["set", org, "OPENAI", OPENAI_KEY], stdin=OPENAI_KEY)
    assert refused.exit_code == 2 and "unexpected extra argument" in refused.output.lower()


@pytest.mark.emulator
def test_a_bad_key_is_invalid_with_the_providers_error(world, monkeypatch):
    org = new_org(world, "cli_bad")
    with structlog.testing.capture_logs() as logs:
        result = cli(world, monkeypatch, ["set", org, "OPENAI"], stdin=BAD_KEY)
    assert result.exit_code == 1
    assert "INVALID" in result.output and "401" in result.output
    row = credential_row(world, org, "OPENAI")
    assert row["validation_status"] == "INVALID" and "Incorrect API key" in row["validation_error"]
    for text in (result.output, repr(logs), row["validation_error"]):
        assert BAD_KEY not in text
    deleted = cli(world, monkeypatch, ["delete", org, "OPENAI"])
    assert deleted.exit_code == 0 and world.services.credentials.providers(org) == []
    again = cli(world, monkeypatch, ["delete", org, "OPENAI"])
    assert again.exit_code == 1 and "has no active OPENAI credential" in again.output
    unknown = cli(world, monkeypatch, ["validate", org, "NOPE_PROVIDER"])
    assert unknown.exit_code == 2 and "no validation call is defined" in unknown.output


@pytest.mark.emulator
def test_anthropic_and_gcp_validation_calls(world):
    from convergence.tenancy.validation import validate_stored

    store = world.services.credentials
    gcp = world.stand_ins["gcp"]
    org = new_org(world, "validate")
    good_sa = gcp.service_account_key("proj-lifecycle")
    unknown_sa = json.loads(json.dumps(good_sa)) | {"client_email": "nobody@proj-lifecycle.iam.gserviceaccount.com"}
    calls_before = len(gcp.api_calls)

    async def check(provider: str, secret: str):
        store.put(org, provider, secret)
        try:
            return await validate_stored(world.services, org, provider)
        finally:
            await world.services.aclose()

    assert asyncio.run(check("CLAUDE", ANTHROPIC_KEY)).status == "VALID"
    bad = asyncio.run(check("ANTHROPIC", "sk-ant-admin01-nope"))
    assert bad.status == "INVALID" and "invalid x-api-key" in bad.error
    assert credential_row(world, org, "ANTHROPIC")["validation_error"] == bad.error
    assert asyncio.run(check("GCP_SA", json.dumps(good_sa))).status == "VALID"
    assert gcp.api_calls[calls_before:] == [("/v1/billingAccounts", {"pageSize": "1"})]
    refused = asyncio.run(check("GCP_SA", json.dumps(unknown_sa)))
    assert refused.status == "INVALID" and "token request refused" in refused.error
    assert good_sa["private_key"] not in refused.error
    assert asyncio.run(check("GCP", "not json")).status == "INVALID"
    row = credential_row(world, org, "GCP_SA")
    assert row["validation_status"] == "INVALID" and "not valid JSON" in row["validation_error"]


@pytest.mark.emulator
def test_store_validate_seed_pipeline(world):
    from convergence.consumer.observers import CompositeObserver
    from convergence.notifications.notifier import NotificationObserver
    from convergence.pipeline import Executor, PipelineLoader, RunContext

    loader = PipelineLoader(CONFIGS)
    config = loader.load("integrations/openai/credential_setup")
    org = new_org(world, "dag")

    async def run(secret: str):
        context = RunContext(org_slug=org, run_id=f"run_{uuid.uuid4().hex}", pipeline_id=config.pipeline_id,
                             secrets={"credential": secret}, services=world.services)
        executor = Executor(observer=CompositeObserver([NotificationObserver(world.services)]))
        try:
            return await executor.run(config, context)
        finally:
            await world.services.aclose()

    bad = asyncio.run(run(BAD_KEY))
    assert [s.status.value for s in bad.steps] == ["SUCCESS", "FAILED", "SKIPPED"]
    assert bad.steps[1].error.code == "CREDENTIAL_INVALID" and BAD_KEY not in bad.steps[1].error.message
    assert credential_row(world, org, "OPENAI")["validation_status"] == "INVALID"
    good = asyncio.run(run(OPENAI_KEY))
    assert good.status.value == "SUCCESS", good.error
    assert good.steps[1].result["validation_status"] == "VALID" and good.steps[2].rows_processed > 0
    assert OPENAI_KEY not in repr(good.steps[0].result)
    assert credential_row(world, org, "OPENAI")["validation_status"] == "VALID"


def fan_out_orgs(world, provider: str) -> int:
    from convergence.pipeline import PipelineLoader
    from convergence.publisher.fanout import TickFanOut
    from convergence.publisher.ledger import ExecutionLedger
    from convergence.tenancy.eligibility import EligibleOrgs

    s = world.settings
    fanout = TickFanOut(PipelineLoader(s.configs_dir), world.services.requests,
                        EligibleOrgs(world.services.bigquery, s), ExecutionLedger(world.services.bigquery, s))
    report = fanout.fan_out(datetime(2026, 3, 3, 4, 0, tzinfo=UTC), dry_run=True)  # usage_cost (04:00) due
    assert "openai/cost/usage_cost" in {pipeline for pipeline, _slot in report.due}
    return report.orgs.get(provider, 0)


@pytest.mark.emulator
@pytest.mark.slow
def test_a_401_during_a_run_marks_invalid_once_and_the_next_tick_skips_the_org(world):
    from convergence.tenancy.contacts import SLACK_PROVIDER
    from convergence.tenancy.eligibility import EligibleOrgs

    openai, slack = world.stand_ins["openai"], world.stand_ins["slack"]
    org = new_org(world, "run401")
    hook = slack.webhook()
    world.services.credentials.put(org, SLACK_PROVIDER, hook)
    world.services.credentials.put(org, "OPENAI", OPENAI_KEY, validation_status="VALID")
    eligible = EligibleOrgs(world.services.bigquery, world.settings)
    assert org in eligible("OPENAI") and fan_out_orgs(world, "OPENAI") >= 1
    before = fan_out_orgs(world, "OPENAI")
    if world.consumer is None:
        world.start_consumer()
    openai.admin_keys = frozenset({"sk-admin-rotated-by-the-org"})  # the org revoked the stored key
    try:
        runs = []
        with structlog.testing.capture_logs() as logs:  # the consumer's threads log through the same config
            for _ in range(2):  # a second failing run (an ad-hoc one) is not a second transition
                rid = f"run_{uuid.uuid4().hex}"
                world.publish(org, "openai/cost/usage_cost", {"start_date": DAY, "end_date": DAY}, run_id=rid)
                events = world.follower.wait_for(rid, "pipeline_completed", timeout=60)
                assert events[-1]["status"] == "FAILED" and events[-1]["error"]["code"] == "PROVIDER_AUTH_FAILED"
                runs.append((rid, events))
    finally:
        openai.admin_keys = frozenset({OPENAI_KEY})
    assert any(e.get("event") == "credential rejected by the provider; marked INVALID" for e in logs)
    assert OPENAI_KEY not in repr(logs)
    row = credential_row(world, org, "OPENAI")
    assert row["validation_status"] == "INVALID" and "credentials rejected" in row["validation_error"]
    assert OPENAI_KEY not in row["validation_error"]
    central = world.services.credentials.central
    audits = central.queries.rows(
        "SELECT `details` FROM " + central.ref("org_audit_logs") +  # noqa: S608
        " WHERE `org_slug` = @org AND `action` = 'CREDENTIAL_INVALIDATED'", {"org": org})
    assert len(audits) == 1 and runs[0][0] in audits[0]["details"]
    # the org was told once, on the transition, not once per failing run
    posted = slack.posted_to(hook)
    assert len(posted) == 1 and "CREDENTIAL_INVALID" in json.dumps(posted[0])
    assert runs[0][0] in json.dumps(posted[0]) and OPENAI_KEY not in json.dumps(posted[0])
    # the scheduler no longer fans the org's OPENAI pipelines out; its other pipelines are untouched
    assert org not in eligible("OPENAI") and fan_out_orgs(world, "OPENAI") == before - 1
    assert org in eligible(None)
    for rid, events in runs:
        text = repr(events) + repr(world.run_record(rid, status="FAILED"))
        assert OPENAI_KEY not in text
    # a new key (set again) makes the org eligible again
    world.services.credentials.put(org, "OPENAI", OPENAI_KEY)
    assert org in eligible("OPENAI")
