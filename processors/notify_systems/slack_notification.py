"""ps_type `notify_systems.slack_notification`: a Slack incoming-webhook message about the run.

    - step_id: notify_slack
      ps_type: notify_systems.slack_notification
      config:
        trigger: on_failure          # immediate (default) | on_failure | on_success | on_completion | always
        provider: SLACK_WEBHOOK      # the webhook URL is a credential (context secrets, then the store) ...
        secret_key: slack_webhook    # ... or a secret of the run; without either: setting SLACK_WEBHOOK_URL
        message: "Daily costs for {org_slug} are late."

A delivery failure is reported in the step result (`notification_sent: false`), never as a failure of the
step or the run.
"""

from __future__ import annotations

from convergence.extractors.credentials import resolve_credential
from convergence.notifications.messages import RunSummary, render_template
from convergence.notifications.notifier import Delivery, Notifier
from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import StepError
from convergence.pipeline.models import StepConfig
from convergence.processors.notify_systems._base import NotificationStep


class SlackNotification(NotificationStep):
    channel = "slack"

    async def deliver(self, step: StepConfig, context: RunContext, summary: RunSummary) -> Delivery:
        config = step.config
        webhook = None
        if config.get("provider") or config.get("secret_key"):
            try:
                credential = await resolve_credential(context, config.get("provider"), config.get("secret_key"))
            except StepError as error:
                return Delivery("slack", False, f"no Slack webhook: {error}")
            webhook = credential.value if credential else None
        names = context.lookup()
        message = render_template(str(config["message"]), summary, names) if config.get("message") else None
        options = {k: config[k] for k in ("username", "icon_emoji", "channel") if config.get(k)}
        return await Notifier(context.services.settings).send_slack(summary, webhook_url=webhook, options=options,
                                                                     message=message)


def get_engine() -> SlackNotification:
    return SlackNotification()
