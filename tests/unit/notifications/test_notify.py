"""Notifications against real local servers: an aiosmtpd SMTP server that requires STARTTLS and a login
(certificate from a test CA the client verifies), and a Slack incoming-webhook stand-in.

The consumer's failure hook mails and posts the run's details; notification steps fire on their triggers
when the run's outcome is known (also when the step itself was skipped); a notifier that fails never
changes a run's status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import ipaddress
import ssl
from dataclasses import dataclass, field
from email import policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from convergence.consumer.outcome import Outcome, OutcomeKind
from convergence.devstack.ports import free_port
from convergence.devstack.providers.slack_server import SlackStandIn
from convergence.notifications import FailureNotifier, NotificationObserver, Notifier, RunSummary
from convergence.pipeline import RunStatus, StepStatus
from tests.support.generic import TestServices, make_settings, new_org, pipeline, run

SMTP_USER, SMTP_PASSWORD = "pipelines@convergence.test", "app-password-7731"


def _certificates(directory) -> tuple[str, str, str]:
    """A test CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "convergence test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)  # type: ignore[return-value]


@dataclass
class Mailbox:
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str], bool]] = field(default_factory=list)  # (from, to, over TLS)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), session.ssl is not None))
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


def _authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == SMTP_USER \
        and auth_data.password.decode() == SMTP_PASSWORD
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself


@pytest.fixture(scope="module")
def smtp(tmp_path_factory):
    """aiosmtpd on 127.0.0.1: STARTTLS required before AUTH and MAIL, AUTH LOGIN/PLAIN required."""
    ca, cert, key = _certificates(tmp_path_factory.mktemp("smtp-tls"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            require_starttls=True, auth_required=True, authenticator=_authenticate,
                            auth_require_tls=True)
    controller.start()
    try:
        yield mailbox, controller.port, ca
    finally:
        controller.stop()


@pytest.fixture
async def slack():
    server = SlackStandIn()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def notify_settings(local_stack, smtp, slack):
    mailbox, port, ca = smtp

    def make(**overrides):
        base = {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_username": SMTP_USER,
                "smtp_password": SMTP_PASSWORD, "smtp_use_tls": True, "smtp_ca_file": ca,
                "smtp_from_email": "pipelines@convergence.test", "default_admin_email": "oncall@acme.test",
                "slack_webhook_url": slack.webhook()}
        return make_settings(local_stack, **{**base, **overrides})

    return make


async def _failed_run(settings, observer=None, extra_steps=()):
    """A real pipeline whose extraction step fails (connection refused), plus any notification steps."""
    services = TestServices(settings)
    org = new_org("ntf")
    failing = {"step_id": "extract_usage", "ps_type": "generic.api_extractor", "config": {
        "url": "http://127.0.0.1:1/v1/usage", "rate_limit": {"max_retries": 0},
        "destination": {"table": "usage_raw"}}}
    try:
        result, context = await run(pipeline([failing, *extra_steps], pipeline_id="acme-usage-daily"), services, org,
                                    observer=observer)
    finally:
        await services.aclose()
    return result, context, org


def _outcome(result) -> Outcome:
    """The Outcome the consumer hands its failure hook for this result."""
    return Outcome(OutcomeKind.FAILED, result.run_id, result.org_slug, code=result.error.code,
                   message=result.error.message, details={"pipeline": "acme/usage/daily",
                                                          "pipeline_id": result.pipeline_id, "attempt": 1})


async def test_failure_notice_mails_and_posts_the_run_details(notify_settings, smtp, slack):
    mailbox, _, _ = smtp
    settings = notify_settings()
    result, _, org = await _failed_run(settings)
    assert result.status is RunStatus.FAILED and result.error.code == "PROVIDER_NETWORK_ERROR"
    before = len(mailbox.messages)

    hook = FailureNotifier(settings)
    await hook(_outcome(result))
    assert [d.sent for d in hook.last] == [True, True], hook.last

    message = mailbox.messages[before]
    sender, recipients, over_tls = mailbox.envelopes[before]
    assert over_tls and sender == "pipelines@convergence.test" and recipients == ["oncall@acme.test"]
    assert message["Subject"] == f"[Convergence] FAILED: acme-usage-daily for {org}"
    body = message.get_content()
    for detail in (org, result.run_id, "PROVIDER_NETWORK_ERROR", "Failed step:  extract_usage", "127.0.0.1:1"):
        assert detail in body, detail

    posted = slack.messages[-1]
    assert result.run_id in posted["text"] and "acme-usage-daily: FAILED" in posted["text"]
    fields = " ".join(f["text"] for f in posted["blocks"][1]["fields"])
    assert org in fields and "PROVIDER_NETWORK_ERROR" in fields and "extract_usage" in fields
    assert posted["username"] == "Convergence"


async def test_trigger_steps_fire_on_the_runs_outcome(notify_settings, smtp, slack):
    mailbox, _, _ = smtp
    settings = notify_settings()
    steps = [
        {"step_id": "notify_on_failure", "ps_type": "notify_systems.email_notification",
         "depends_on": ["extract_usage"],
         "config": {"trigger": "on_failure", "to": ["finops@acme.test"],
                    "subject": "Usage load failed for {org_slug}", "message": "Run {run_id} needs a look."}},
        {"step_id": "notify_on_success", "ps_type": "notify_systems.slack_notification",
         "depends_on": ["extract_usage"], "config": {"trigger": "on_success"}},
        {"step_id": "notify_always", "ps_type": "notify_systems.slack_notification",
         "config": {"trigger": "always", "message": "daily usage run finished"}},
    ]
    before_mail, before_slack = len(mailbox.messages), len(slack.messages)
    observer = NotificationObserver(TestServices(settings))
    result, context, org = await _failed_run(settings, observer=observer, extra_steps=steps)

    assert result.status is RunStatus.FAILED
    assert result.step("notify_on_failure").status is StepStatus.SKIPPED  # upstream failed ...
    assert result.step("notify_always").status is StepStatus.SUCCESS  # deferred to the run's end
    assert result.step("notify_always").result["deferred_to_run_end"] is True
    sent = {step_id: d.sent for step_id, d in observer.deliveries}
    assert sent == {"notify_on_failure": True, "notify_always": True}  # ... yet its notice went out
    message = mailbox.messages[before_mail]
    assert message["Subject"] == f"Usage load failed for {org}" and message["To"] == "finops@acme.test"
    assert f"Run {context.run_id} needs a look." in message.get_content()
    assert len(slack.messages) == before_slack + 1 and "daily usage run finished" in str(slack.messages[-1])


async def test_immediate_step_and_a_failing_notifier_never_change_the_runs_status(notify_settings, smtp, slack):
    mailbox, _, _ = smtp
    # SMTP unreachable and Slack answering 500: every delivery fails.
    settings = notify_settings(smtp_port=1)
    slack.fail_next(500, times=10)
    services = TestServices(settings)
    observer = NotificationObserver(services)
    steps = [
        {"step_id": "report", "ps_type": "notify_systems.email_notification", "config": {"message": "hello"}},
        {"step_id": "notify_done", "ps_type": "notify_systems.slack_notification",
         "depends_on": ["report"], "config": {"trigger": "on_success"}},
    ]
    try:
        result, _ = await run(pipeline(steps), services, new_org("ntf"), observer=observer)
    finally:
        await services.aclose()
    assert result.status is RunStatus.SUCCESS, result.error  # the run's own result is untouched
    report = result.step("report")
    assert report.status is StepStatus.SUCCESS and report.result["notification_sent"] is False
    assert "SMTP delivery to 127.0.0.1:1 failed" in report.result["notification_error"]
    assert [(s, d.sent) for s, d in observer.deliveries] == [("notify_done", False)]

    # The failure hook swallows its errors too.
    failed, _, _ = await _failed_run(settings)
    hook = FailureNotifier(settings)
    await hook(_outcome(failed))
    assert [d.sent for d in hook.last] == [False, False]
    assert SMTP_PASSWORD not in " ".join(d.detail for d in hook.last)


async def test_slack_rate_limit_is_retried_after_retry_after(notify_settings, slack):
    settings = notify_settings()
    slack.fail_next(429, times=1, retry_after=0.3)
    summary = RunSummary(org_slug="acme", run_id="run_1", status="FAILED", pipeline_id="p", error_code="X")
    loop = asyncio.get_running_loop()
    started = loop.time()
    delivery = await Notifier(settings).send_slack(summary)
    assert delivery.sent and loop.time() - started >= 0.29


async def test_wrong_smtp_password_is_reported_without_the_password(notify_settings):
    settings = notify_settings(smtp_password="not-the-password")
    summary = RunSummary(org_slug="acme", run_id="run_2", status="FAILED")
    delivery = await Notifier(settings).send_email(summary)
    assert not delivery.sent and "SMTP login refused" in delivery.detail and "not-the-password" not in delivery.detail


async def test_slack_webhook_on_loopback_is_refused_in_production(notify_settings, slack):
    settings = notify_settings(environment="production")
    before = slack.requests
    delivery = await Notifier(settings).send_slack(RunSummary(org_slug="acme", run_id="run_3", status="FAILED"))
    assert not delivery.sent and "refused" in delivery.detail and "/services/" not in delivery.detail
    assert slack.requests == before


async def test_subject_cannot_inject_headers(notify_settings, smtp):
    mailbox, _, _ = smtp
    settings = notify_settings()
    summary = RunSummary(org_slug="acme", run_id="run_4", status="FAILED", pipeline_id="p\r\nBcc: evil@x.test")
    before = len(mailbox.messages)
    assert (await Notifier(settings).send_email(summary)).sent
    message = mailbox.messages[before]
    assert message["Bcc"] is None and mailbox.envelopes[before][1] == ["oncall@acme.test"]
