"""Notifications: email over SMTP (TLS) and Slack incoming webhooks, for failed runs and for pipeline steps.

- `FailureNotifier(settings)`: the consumer's failure hook (`Callable[[Outcome], Awaitable[None]]`): a
  run that failed for good is reported by email and Slack, as configured in configs/notify_systems/, and
  to the org itself (its admin email and SLACK_WEBHOOK credential, unless it opted out: `convergence notify`).
- `NotificationObserver(services)`: runs the notification steps whose `trigger` is on_failure, on_success,
  on_completion or always once the run's outcome is known (the executor itself has no triggers).
- `Notifier`: the delivery code both use. A delivery failure is logged and reported, never raised: a
  broken notifier never changes a run's result or the ack decision.
"""

from convergence.notifications.messages import RunSummary
from convergence.notifications.notifier import Delivery, FailureNotifier, NotificationObserver, Notifier

__all__ = ["Delivery", "FailureNotifier", "NotificationObserver", "Notifier", "RunSummary"]
