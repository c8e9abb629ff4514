"""The org hears about its own runs: a failed, timed-out or dead-lettered run is mailed to the org's admin
(aiosmtpd, STARTTLS and login) and posted to the org's SLACK_WEBHOOK credential (Slack stand-in), besides
the platform's recipients; another org hears nothing; an org that opted out hears nothing; a run is told
once, not per redelivery; contacts of many orgs failing together are one query, then cached."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import structlog
from click.testing import CliRunner
from pydantic import SecretStr

from convergence.commands.notify import notify
from convergence.consumer.dead_letters import DELIVERY_COUNT, DeadLetterHandler
from convergence.consumer.handler import RunHandler
from convergence.consumer.outcome import Outcome, OutcomeKind
from convergence.pipeline import PipelineLoader
from convergence.runtime import Services
from convergence.schemas.run_request import RunRequest
from convergence.settings.model import Environment
from convergence.tenancy.central import Central
from convergence.tenancy.contacts import SLACK_PROVIDER, OrgContacts, read_contacts, set_failure_notices
from convergence.tenancy.onboarding import onboard_org
from tests.harness import Platform
from tests.unit.notifications.test_notify import SMTP_PASSWORD, SMTP_USER, slack, smtp  # noqa: F401 - fixtures

pytestmark = [pytest.mark.emulator]
PLATFORM_ADMIN = "oncall@platform.test"


@pytest.fixture(scope="module")
def platform(local_stack, smtp, tmp_path_factory):  # noqa: F811 - the imported fixture
    _, port, ca = smtp
    platform = Platform(local_stack, tmp_path_factory.mktemp("org-notices"), smtp_host="127.0.0.1", smtp_port=port,
                        smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD, smtp_use_tls=True, smtp_ca_file=ca,
                        smtp_from_email="pipelines@convergence.test", default_admin_email=PLATFORM_ADMIN)
    yield platform
    platform.close()


@pytest.fixture
def world(platform, slack):  # noqa: F811 - the imported fixture
    """Two onboarded orgs with an admin email and a Slack webhook each, and services whose platform webhook
    is a third hook on the stand-in."""
    platform_hook = slack.webhook()
    settings = platform.settings.model_copy(update={"slack_webhook_url": SecretStr(platform_hook)})
    services = Services(settings)
    orgs = {}
    for name in ("acme", "other"):
        org = f"{name}_{uuid.uuid4().hex[:8]}"
        onboard_org(services.bigquery, settings, services.cipher, org, "SCALE", admin_email=_admin(org))
        hook = slack.webhook()
        services.credentials.put(org, SLACK_PROVIDER, hook)
        orgs[name] = (org, hook)
    yield services, orgs, platform_hook
    services.close()


def _admin(org: str) -> str:
    return f"admin@{org.replace('_', '-')}.test"


def _sent_to(mailbox, address: str, run_id: str) -> list:
    return [m for m, (_, to, _) in zip(mailbox.messages, mailbox.envelopes, strict=True)
            if address in to and run_id in m.get_content()]


def _request(org: str, pipeline: str) -> RunRequest:
    return RunRequest.create(org, pipeline, {}, "adhoc", "test", run_id=f"run_{uuid.uuid4().hex}")


async def test_failed_run_tells_its_org_and_the_platform_and_no_other_org(world, smtp, slack, platform):  # noqa: F811
    mailbox, _, _ = smtp
    services, orgs, platform_hook = world
    (acme, acme_hook), (other, other_hook) = orgs["acme"], orgs["other"]
    handler = RunHandler(services=services, loader=PipelineLoader(services.settings.configs_dir),
                         notify=services.notifier)
    request = _request(acme, "testing/consumer/permanent")
    try:
        outcome = await handler.handle(request.to_json(), request.attributes(), "m1", 1)
        told = list(services.notifier.last)
        # Its ack was lost: Pub/Sub delivers it again, it fails again, nobody is told twice.
        again = await handler.handle(request.to_json(), request.attributes(), "m1", 2)
    finally:
        await handler.aclose()
    assert again.kind is OutcomeKind.FAILED and services.notifier.last == []
    assert outcome.kind is OutcomeKind.FAILED and outcome.code == "PROVIDER_AUTH_FAILED"
    assert {d.channel: d.sent for d in told} == {"email": True, "slack": True, "org_email": True, "org_slack": True}

    org_mail = _sent_to(mailbox, _admin(acme), request.run_id)
    assert len(org_mail) == 1 and org_mail[0]["To"] == _admin(acme)  # platform recipients not shown
    assert "PROVIDER_AUTH_FAILED" in org_mail[0].get_content() and acme in org_mail[0]["Subject"]
    assert len(_sent_to(mailbox, PLATFORM_ADMIN, request.run_id)) == 1
    posted = slack.posted_to(acme_hook)
    assert len(posted) == 1 and request.run_id in posted[0]["text"] and "channel" not in posted[0]
    assert len(slack.posted_to(platform_hook)) == 1

    assert not _sent_to(mailbox, _admin(other), request.run_id)
    assert slack.posted_to(other_hook) == []


async def test_dead_letter_tells_once_even_when_redelivered_to_another_process(world, smtp, slack):  # noqa: F811
    mailbox, _, _ = smtp
    services, orgs, platform_hook = world
    acme, acme_hook = orgs["acme"]
    request = _request(acme, "testing/consumer/transient")
    attributes = {**request.attributes(), DELIVERY_COUNT: "5"}
    first = DeadLetterHandler(services, services.notifier)
    outcome = await first.handle(request.to_json(), attributes, "d1", None)
    assert outcome.code == "DEAD_LETTERED"
    assert {d.channel for d in services.notifier.last if d.sent} == {"email", "slack", "org_email", "org_slack"}

    await first.handle(request.to_json(), attributes, "d1", None)  # redelivered to the same process
    other_process = Services(services.settings)  # a second consumer: its own memory, the same audit trail
    try:
        await DeadLetterHandler(other_process, other_process.notifier).handle(request.to_json(), attributes, "d1",
                                                                               None)
        assert other_process.notifier.last == []
    finally:
        other_process.close()
    assert len(_sent_to(mailbox, _admin(acme), request.run_id)) == 1
    assert len(_sent_to(mailbox, PLATFORM_ADMIN, request.run_id)) == 1
    assert len(slack.posted_to(acme_hook)) == 1 and len(slack.posted_to(platform_hook)) == 1

    # `convergence dlq replay` runs it again (same run_id): if that dead-letters too, the org hears again.
    services.runlog.run_started(run_id=request.run_id, org_slug=acme, pipeline=request.pipeline, attempt=1)
    assert services.runlog.flush()
    await first.handle(request.to_json(), attributes, "d2", None)
    assert {d.channel for d in services.notifier.last if d.sent} == {"email", "slack", "org_email", "org_slack"}
    assert len(_sent_to(mailbox, _admin(acme), request.run_id)) == 2 and len(slack.posted_to(acme_hook)) == 2


async def test_opted_out_org_hears_nothing_and_the_platform_still_does(world, smtp, slack, monkeypatch):  # noqa: F811
    mailbox, _, _ = smtp
    services, orgs, platform_hook = world
    acme, acme_hook = orgs["acme"]
    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: services.settings)
    result = CliRunner().invoke(notify, [acme, "--off", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"org": acme, "failure_notices": "off", "admin_email": _admin(acme),
                                         "slack_webhook": "set", "changed": ["failure notices off"]}
    assert acme_hook.rsplit("/", 1)[1] not in result.output

    run_id = f"run_{uuid.uuid4().hex}"
    await services.notifier(Outcome(OutcomeKind.TIMED_OUT, run_id, acme, code="STEP_TIMEOUT", message="slow"))
    assert {d.channel for d in services.notifier.last} == {"email", "slack"}
    assert not _sent_to(mailbox, _admin(acme), run_id) and slack.posted_to(acme_hook) == []
    assert len(_sent_to(mailbox, PLATFORM_ADMIN, run_id)) == 1 and len(slack.posted_to(platform_hook)) == 1

    back_on = CliRunner().invoke(notify, [acme, "--on"])
    assert back_on.exit_code == 0 and "failure notices on" in back_on.output
    services.notifier.contacts.forget(acme)
    again = f"run_{uuid.uuid4().hex}"
    await services.notifier(Outcome(OutcomeKind.FAILED, again, acme, code="X", message="boom"))
    assert len(_sent_to(mailbox, _admin(acme), again)) == 1 and len(slack.posted_to(acme_hook)) == 1


async def test_contacts_of_orgs_failing_together_are_one_query_then_cached(world):
    services, orgs, _ = world
    contacts = OrgContacts(services)
    names = [orgs["acme"][0], orgs["other"][0], "never_onboarded"]
    found = await asyncio.gather(*(contacts.get(org) for org in names * 3))
    assert contacts.reads == 1
    assert [(c.org_slug, c.exists, c.admin_email) for c in found[:3]] == [
        (names[0], True, _admin(names[0])), (names[1], True, _admin(names[1])),
        ("never_onboarded", False, None)]
    assert found[0].slack_webhook.get_secret_value() == orgs["acme"][1]
    await asyncio.gather(*(contacts.get(org) for org in names))
    assert contacts.reads == 1  # within cache_seconds: no query at all


async def test_org_webhook_goes_through_the_ssrf_guard_and_never_into_logs(world, slack):  # noqa: F811
    services, orgs, _ = world
    acme, acme_hook = orgs["acme"]
    settings = services.settings.model_copy(update={"environment": Environment.PRODUCTION, "slack_webhook_url": None,
                                                    "smtp_host": None})
    production = Services(settings)
    production.__dict__["cipher"] = services.cipher  # the local keyring (production settings want Cloud KMS)
    try:
        with structlog.testing.capture_logs() as logs:
            await production.notifier(Outcome(OutcomeKind.FAILED, f"run_{uuid.uuid4().hex}", acme, code="X"))
    finally:
        production.close()
    refused = [d for d in production.notifier.last if d.channel == "org_slack"]
    assert len(refused) == 1 and not refused[0].sent and "refused" in refused[0].detail
    assert slack.posted_to(acme_hook) == []
    secret = acme_hook.split("/services/", 1)[1]
    assert secret not in refused[0].detail and secret not in json.dumps(logs, default=str)


def test_opt_out_of_an_unknown_org_is_a_clear_error(platform, monkeypatch):
    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: platform.settings)
    result = CliRunner().invoke(notify, ["nobody_here", "--off"])
    assert result.exit_code == 1 and "org nobody_here is not onboarded" in result.output
    assert "Traceback" not in result.output
    nowhere = platform.settings.model_copy(update={"central_dataset": "organizations_never_bootstrapped"})
    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: nowhere)
    missing = CliRunner().invoke(notify, ["nobody_here"])
    assert missing.exit_code == 1 and "BigQuery refused" in missing.output and "convergence bootstrap" in missing.output
    central = Central(platform.services.bigquery, platform.settings)
    with pytest.raises(LookupError, match="not onboarded"):
        set_failure_notices(central, "nobody_here", False)
    assert read_contacts(central, platform.services.cipher, ["nobody_here"])["nobody_here"].exists is False


def test_slack_webhook_is_set_from_stdin_never_printed_and_removed(world, slack, monkeypatch):  # noqa: F811
    services, orgs, _ = world
    acme, _ = orgs["acme"]
    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: services.settings)
    runner = CliRunner()
    refused = runner.invoke(notify, [acme, "--slack-webhook", "-"], input="file:///etc/passwd\n")
    assert refused.exit_code == 2 and "only http(s) URLs" in refused.output and "Traceback" not in refused.output

    new_hook = slack.webhook()
    result = runner.invoke(notify, [acme, "--slack-webhook", "-"], input=new_hook + "\n")
    assert result.exit_code == 0, result.output
    assert "Slack webhook stored" in result.output and new_hook.split("/services/", 1)[1] not in result.output
    assert services.credentials.get(acme, SLACK_PROVIDER) == new_hook

    removed = runner.invoke(notify, [acme, "--no-slack-webhook", "--json"])
    assert removed.exit_code == 0 and json.loads(removed.output)["slack_webhook"] == "not set"
