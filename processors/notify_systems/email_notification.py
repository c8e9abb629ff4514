"""ps_type `notify_systems.email_notification`: an email about the run (SMTP with TLS; server and
credentials come from the SMTP_* settings).

    - step_id: notify_on_failure
      ps_type: notify_systems.email_notification
      depends_on: [extract_usage, transform_cost]
      config:
        trigger: on_failure          # immediate (default) | on_failure | on_success | on_completion | always
        to: ["finops@acme.com"]      # default: the channel config's recipients + DEFAULT_ADMIN_EMAIL
        subject: "{status}: {pipeline_id} for {org_slug}"
        message: "Usage for {start_date} could not be loaded."

A delivery failure is reported in the step result (`notification_sent: false`), never as a failure of the
step or the run.
"""

from __future__ import annotations

from typing import Any

from convergence.notifications.messages import RunSummary, render_template
from convergence.notifications.notifier import Delivery, Notifier
from convergence.pipeline.context import RunContext
from convergence.pipeline.models import StepConfig
from convergence.processors.notify_systems._base import NotificationStep


class EmailNotification(NotificationStep):
    channel = "email"

    async def deliver(self, step: StepConfig, context: RunContext, summary: RunSummary) -> Delivery:
        config = step.config
        names: dict[str, Any] = context.lookup()
        recipients = config.get("to") or config.get("recipients")
        if isinstance(recipients, str):
            recipients = render_template(recipients, summary, names)
        elif isinstance(recipients, list):
            recipients = [render_template(str(r), summary, names) for r in recipients]
        message = render_template(str(config["message"]), summary, names) if config.get("message") else None
        return await Notifier(context.services.settings).send_email(
            summary, recipients=recipients, subject=config.get("subject"), message=message, names=names)


def get_engine() -> EmailNotification:
    return EmailNotification()
