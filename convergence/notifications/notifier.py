"""Delivery of notifications, the consumer's failure hook, and the observer that runs trigger steps."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import structlog

from convergence.notifications.config import channel_config
from convergence.notifications.email import EmailSender, NotificationError, valid_recipients
from convergence.notifications.messages import RunSummary, email_body, render_template, slack_payload
from convergence.notifications.slack import SlackSender
from convergence.pipeline import ProcessorRegistry, RunContext, RunObserver
from convergence.pipeline.errors import ErrorCode
from convergence.pipeline.models import PipelineConfig, StepConfig
from convergence.pipeline.results import PipelineResult
from convergence.schemas.errors import UNKNOWN_ORG

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices

log = structlog.get_logger(__name__)

TRIGGERS = ("immediate", "on_failure", "on_success", "on_completion", "always")
_FAILED = ("FAILED", "TIMEOUT")
DEAD_LETTERED = ErrorCode.DEAD_LETTERED  # the code of a dead-lettered run's outcome


def step_trigger(step: StepConfig) -> str:
    """A notification step's trigger; `immediate` (send when the step runs) unless the config says so."""
    trigger = str(step.config.get("trigger") or "immediate").lower()
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger {trigger!r} is not one of {', '.join(TRIGGERS)}")
    return trigger


def trigger_matches(trigger: str, status: str) -> bool:
    if trigger in ("always", "on_completion"):
        return True
    if trigger == "on_failure":
        return status in _FAILED
    if trigger == "on_success":
        return status == "SUCCESS"
    return False


@dataclass(frozen=True)
class Delivery:
    channel: str
    sent: bool
    detail: str = ""


class Notifier:
    """Sends one notification per call. Never raises: a failure becomes Delivery(sent=False, detail)."""

    def __init__(self, settings: Any):
        self.settings = settings
        self.email = EmailSender(settings)
        self.slack = SlackSender(settings)

    def config(self, channel: str) -> dict[str, Any]:
        return channel_config(self.settings.configs_dir, channel)

    def default_recipients(self) -> list[str]:
        recipients = list(self.config("email_notification").get("recipients") or [])
        if self.settings.default_admin_email:
            recipients.append(self.settings.default_admin_email)
        return recipients

    async def send_email(self, summary: RunSummary, *, recipients: list[str] | str | None = None,
                         subject: str | None = None, message: str | None = None,
                         names: dict[str, Any] | None = None) -> Delivery:
        try:
            config = self.config("email_notification")
            if not config.get("enabled", True):
                return Delivery("email", False, "email notifications are disabled")
            to = valid_recipients(recipients if recipients else self.default_recipients())
            title = render_template(subject or config["subject"], summary, names)
            await self.email.send(to, title, email_body(summary, message))
        except NotificationError as error:
            log.warning("email notification not delivered", run_id=summary.run_id, reason=str(error))
            return Delivery("email", False, str(error))
        except Exception as error:  # noqa: BLE001 - a notification never breaks a run
            log.exception("email notification failed", run_id=summary.run_id)
            return Delivery("email", False, f"{type(error).__name__}")
        log.info("email notification sent", run_id=summary.run_id, recipients=len(to), status=summary.status)
        return Delivery("email", True, f"{len(to)} recipient(s)")

    async def send_slack(self, summary: RunSummary, *, webhook_url: str | None = None,
                         options: dict[str, Any] | None = None, message: str | None = None) -> Delivery:
        try:
            config = self.config("slack_notification")
            if not config.get("enabled", True):
                return Delivery("slack", False, "Slack notifications are disabled")
            url = webhook_url or (self.settings.slack_webhook_url.get_secret_value()
                                  if self.settings.slack_webhook_url else "")
            await self.slack.send(url, slack_payload(summary, {**config, **(options or {})}, message))
        except NotificationError as error:
            log.warning("Slack notification not delivered", run_id=summary.run_id, reason=str(error))
            return Delivery("slack", False, str(error))
        except Exception as error:  # noqa: BLE001 - a notification never breaks a run
            log.exception("Slack notification failed", run_id=summary.run_id)
            return Delivery("slack", False, f"{type(error).__name__}")
        log.info("Slack notification sent", run_id=summary.run_id, status=summary.status)
        return Delivery("slack", True, "posted")

    async def failure_notice(self, summary: RunSummary) -> list[Delivery]:
        """The platform's notice of a failed run, on every channel configured for it."""
        if not self.settings.notifications_enabled:
            return []
        deliveries = []
        email = self.config("email_notification")
        if email.get("enabled", True) and email.get("failure_notice", True) and self.email.configured \
                and self.default_recipients():
            deliveries.append(await self.send_email(summary))
        slack = self.config("slack_notification")
        if slack.get("enabled", True) and slack.get("failure_notice", True) and self.settings.slack_webhook_url:
            deliveries.append(await self.send_slack(summary))
        if not deliveries:
            log.error("pipeline run failed (no notification channel configured)", run_id=summary.run_id,
                      org_slug=summary.org_slug, code=summary.error_code, reason=summary.error_message)
        return deliveries


class FailureNotifier:
    """The consumer's failure hook: `await FailureNotifier(settings)(outcome)` for a run that failed for good
    (failed, timed out, dead-lettered).

    The platform's recipients get their notice as configured; with `contacts` (tenancy.contacts.OrgContacts)
    the org hears too: its admin email and its SLACK_WEBHOOK credential, unless it opted out. A failed or
    timed-out run is told once per process within `once_seconds` (an acked run comes back only when its ack
    was lost: within minutes); a dead letter once across processes, from the audit trail of notices.
    Never raises. Pass `details={"pipeline": ..., "pipeline_id": ..., "trigger": ...,
    "attempt": ...}` in the Outcome for richer notices."""

    def __init__(self, settings: Any, contacts: Any = None, *, once_seconds: float = 3600,
                 clock: Any = time.monotonic):
        self.notifier = Notifier(settings)
        self.contacts = contacts
        self.once_seconds = once_seconds
        self.clock = clock
        self._told: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.last: list[Delivery] = []

    async def __call__(self, outcome: Any) -> None:
        try:
            summary = RunSummary.from_outcome(outcome)
            if not self._first_notice(summary) or await self._told_elsewhere(summary):
                log.info("failure already notified", run_id=summary.run_id, code=summary.error_code)
                self.last = []
                return
            self.last = await self.notifier.failure_notice(summary)
            self.last += await self.org_notice(summary)
            sent = sorted({d.channel for d in self.last if d.sent})
            if sent and self.contacts is not None and self._known_org(summary):
                await asyncio.to_thread(self.contacts.record_notice, summary.org_slug, summary.run_id,
                                        summary.error_code, sent)
        except Exception:  # noqa: BLE001 - never let a notice change the ack decision
            log.exception("failure notice failed", run_id=getattr(outcome, "run_id", None))

    async def org_notice(self, summary: RunSummary) -> list[Delivery]:
        """The org's own notice: email to its admin, a post to its Slack webhook (each if it has one)."""
        if self.contacts is None or not self.notifier.settings.notifications_enabled or not self._known_org(summary):
            return []
        try:
            contact = await self.contacts.get(summary.org_slug)
        except Exception as error:  # noqa: BLE001 - the platform's notice is out; the org's is best effort
            log.warning("org contacts not read; the org is not told", org_slug=summary.org_slug,
                        run_id=summary.run_id, error=type(error).__name__)
            return [Delivery("org", False, f"org contacts not read ({type(error).__name__})")]
        if not contact.reachable:
            why = "opted out" if contact.exists and not contact.enabled else "no admin email or Slack webhook"
            log.info("org not told of its failed run", org_slug=summary.org_slug, run_id=summary.run_id, why=why)
            return []
        deliveries = []
        if contact.admin_email and self.notifier.email.configured:
            deliveries.append(await self.notifier.send_email(summary, recipients=[contact.admin_email]))
        if contact.slack_webhook is not None:
            # The platform's channel option is not passed on to the org's webhook.
            deliveries.append(await self.notifier.send_slack(
                summary, webhook_url=contact.slack_webhook.get_secret_value(), options={"channel": None}))
        return [Delivery(f"org_{d.channel}", d.sent, d.detail) for d in deliveries]

    @staticmethod
    def _known_org(summary: RunSummary) -> bool:
        return summary.org_slug not in ("unknown", UNKNOWN_ORG)

    def _ledger_decides(self, summary: RunSummary) -> bool:
        return summary.error_code == DEAD_LETTERED and self.contacts is not None and self._known_org(summary)

    async def _told_elsewhere(self, summary: RunSummary) -> bool:
        """A dead letter redelivered to another process: the audit trail says whether its notice went out.
        Failures and timeouts are acked, so their redeliveries are rare and not worth a query."""
        if not self._ledger_decides(summary):
            return False
        try:
            return await self.contacts.already_told(summary.org_slug, summary.run_id)
        except Exception as error:  # noqa: BLE001 - told twice beats not told
            log.warning("notice trail not read", run_id=summary.run_id, error=type(error).__name__)
            return False

    def _first_notice(self, summary: RunSummary) -> bool:
        now = self.clock()
        while self._told and (next(iter(self._told.values())) <= now or len(self._told) > 100_000):
            self._told.popitem(last=False)
        if self._ledger_decides(summary):
            return True  # a replayed run dead-lettered again is told again: the audit trail knows, not memory
        key = (summary.org_slug, summary.run_id)
        if summary.run_id == "unknown" or key not in self._told:
            self._told[key] = now + self.once_seconds
            return True
        return False


class NotificationStep(Protocol):
    """A notify_systems engine: besides `execute`, it delivers a run's summary once the run has finished."""

    async def deliver(self, step: StepConfig, context: RunContext, summary: RunSummary) -> Delivery: ...


class NotificationObserver(RunObserver):
    """Runs the notification steps whose trigger (on_failure, on_success, on_completion, always) matches the
    run's final status, once the run has finished, whether the step itself ran, was deferred or was skipped
    because an upstream step failed. Add it to the executor's observers."""

    def __init__(self, services: PlatformServices, registry: ProcessorRegistry | None = None):
        self.services = services
        self.registry = registry or ProcessorRegistry()
        self._pending: dict[int, list[StepConfig]] = {}
        self._integrations: dict[int, str | None] = {}
        self.deliveries: list[tuple[str, Delivery]] = []

    async def pipeline_started(self, config: PipelineConfig, context: RunContext) -> None:
        self._integrations[id(context)] = config.integration
        steps = []
        for step in config.steps:
            if step.ps_type.startswith("notify_systems."):
                try:
                    if step_trigger(step) != "immediate":
                        steps.append(step)
                except ValueError:
                    continue  # the step itself reports the bad trigger
        if steps:
            self._pending[id(context)] = steps

    async def pipeline_finished(self, result: PipelineResult, context: RunContext) -> None:
        # A provider's 401/403 marks the credential INVALID before the org hears of the failed run.
        from convergence.tenancy.credential_health import mark_rejected_credential

        await mark_rejected_credential(self.services, result, context, self._integrations.pop(id(context), None))
        steps = self._pending.pop(id(context), [])
        if not steps:
            return
        summary = RunSummary.from_result(result, context)
        for step in steps:
            if not trigger_matches(step_trigger(step), result.status.value):
                continue
            try:
                engine = cast(NotificationStep, self.registry.resolve(step.ps_type))
                delivery = await engine.deliver(step, context, summary)
            except Exception:  # noqa: BLE001 - a notification never changes the run's result
                log.exception("notification step failed", step_id=step.step_id)
                continue
            self.deliveries.append((step.step_id, delivery))


__all__ = ["Delivery", "FailureNotifier", "NotificationError", "NotificationObserver", "Notifier", "TRIGGERS",
           "step_trigger", "trigger_matches"]
