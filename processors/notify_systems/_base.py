"""What the two notification processors share: the trigger, and sending now or at the end of the run."""

from __future__ import annotations

from typing import Any

from convergence.notifications.messages import RunSummary
from convergence.notifications.notifier import Delivery, step_trigger
from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, PermanentStepError
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput


class NotificationStep:
    channel = ""

    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        try:
            trigger = step_trigger(step)
        except ValueError as error:
            raise PermanentStepError(str(error), code=ErrorCode.CONFIG_INVALID) from None
        if trigger != "immediate":
            # on_failure / on_success / on_completion / always: the run's outcome is not known yet. The
            # NotificationObserver sends it when the run has finished (also if this step was skipped).
            return {"status": "SUCCESS", "rows_processed": 0, "notification_sent": False, "trigger": trigger,
                    "deferred_to_run_end": True}
        delivery = await self.deliver(step, context, RunSummary.from_context(context))
        result: dict[str, Any] = {"status": "SUCCESS", "rows_processed": 0, "notification_sent": delivery.sent,
                                  "channel": self.channel, "trigger": trigger}
        if not delivery.sent:
            result["notification_error"] = delivery.detail[:300]  # reported, never a step failure
        return result

    async def deliver(self, step: StepConfig, context: RunContext, summary: RunSummary) -> Delivery:
        raise NotImplementedError
