"""What a notification says: a run's summary, rendered as an email (subject + text) or a Slack message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convergence.pipeline.context import PlaceholderError, RunContext, resolve_placeholders

_SYMBOL = {"SUCCESS": ":white_check_mark:", "FAILED": ":x:", "TIMEOUT": ":hourglass:",
           "RUNNING": ":arrows_counterclockwise:"}


@dataclass
class StepLine:
    step_id: str
    status: str
    rows: int = 0
    error_code: str | None = None


@dataclass
class RunSummary:
    org_slug: str
    run_id: str
    status: str
    pipeline_id: str | None = None
    pipeline: str | None = None  # provider/domain/name
    trigger: str | None = None
    attempt: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    failed_step: str | None = None
    duration_ms: int | None = None
    rows_processed: int | None = None
    steps: list[StepLine] = field(default_factory=list)

    @classmethod
    def from_result(cls, result: Any, context: RunContext) -> RunSummary:
        """From a finished run (PipelineResult)."""
        failed = next((s for s in result.steps if s.status.value in ("FAILED", "TIMEOUT")), None)
        return cls(
            org_slug=result.org_slug, run_id=result.run_id, status=result.status.value,
            pipeline_id=result.pipeline_id, trigger=context.trigger, attempt=context.attempt,
            error_code=result.error.code if result.error else None,
            error_message=result.error.message if result.error else None,
            failed_step=failed.step_id if failed else None, duration_ms=result.duration_ms,
            rows_processed=result.rows_processed,
            steps=[StepLine(s.step_id, s.status.value, s.rows_processed, s.error.code if s.error else None)
                   for s in result.steps],
        )

    @classmethod
    def from_context(cls, context: RunContext, status: str = "RUNNING") -> RunSummary:
        """While a run is still going (an `immediate` notification step): the steps done so far."""
        steps = [StepLine(step_id, "SUCCESS", int(output.get("rows_processed") or 0))
                 for step_id, output in context.outputs.items()]
        return cls(org_slug=context.org_slug, run_id=context.run_id, status=status,
                   pipeline_id=context.pipeline_id, trigger=context.trigger, attempt=context.attempt,
                   rows_processed=sum(s.rows for s in steps), steps=steps)

    @classmethod
    def from_outcome(cls, outcome: Any) -> RunSummary:
        """From the consumer's Outcome of a delivery (what the failure hook receives)."""
        details = dict(getattr(outcome, "details", None) or {})
        message = outcome.message or ""
        step, sep, _ = message.partition(": ")
        kind = getattr(outcome.kind, "value", str(outcome.kind))
        return cls(
            org_slug=outcome.org_slug or "unknown", run_id=outcome.run_id or "unknown",
            status={"timed_out": "TIMEOUT", "failed": "FAILED", "rejected": "REJECTED"}.get(kind, kind.upper()),
            pipeline_id=details.get("pipeline_id"), pipeline=details.get("pipeline"),
            trigger=details.get("trigger"), attempt=details.get("attempt"), error_code=outcome.code,
            error_message=message or None, failed_step=step if sep and " " not in step else None,
        )

    def names(self) -> dict[str, Any]:
        return {
            "org_slug": self.org_slug, "run_id": self.run_id, "status": self.status,
            "pipeline_id": self.pipeline_id or self.pipeline or "pipeline", "pipeline": self.pipeline or "",
            "trigger": self.trigger or "", "error_code": self.error_code or "", "failed_step": self.failed_step or "",
        }


def render_template(template: str, summary: RunSummary, extra: dict[str, Any] | None = None) -> str:
    """`{name}` placeholders of the summary (and `extra` names, e.g. the run's parameters); an unknown name
    leaves the template as written rather than failing a notice."""
    try:
        text = str(resolve_placeholders(template, {**(extra or {}), **summary.names()}))
    except PlaceholderError:
        text = template
    return " ".join(text.split())  # one line: no header injection through CR/LF


def email_body(summary: RunSummary, message: str | None = None) -> str:
    lines = []
    if message:
        lines += [message.strip(), ""]
    lines.append(f"Pipeline run {summary.status}")
    lines.append("")
    rows = [("Organization", summary.org_slug), ("Pipeline", summary.pipeline_id or summary.pipeline),
            ("Run id", summary.run_id),
            ("Status", summary.status + (f" ({summary.error_code})" if summary.error_code else "")),
            ("Failed step", summary.failed_step), ("Error", summary.error_message), ("Trigger", summary.trigger),
            ("Attempt", summary.attempt),
            ("Duration", f"{summary.duration_ms / 1000:.1f} s" if summary.duration_ms is not None else None),
            ("Rows", summary.rows_processed)]
    for label, value in rows:
        if value not in (None, ""):
            lines.append(f"{label + ':':<14}{value}")
    if summary.steps:
        lines += ["", "Steps:"]
        width = max(len(s.step_id) for s in summary.steps)
        for step in summary.steps:
            lines.append(f"  {step.step_id:<{width}}  {step.status:<8} {step.rows:>10} rows"
                         + (f"  {step.error_code}" if step.error_code else ""))
    return "\n".join(lines) + "\n"


def slack_payload(summary: RunSummary, options: dict[str, Any], message: str | None = None) -> dict[str, Any]:
    name = summary.pipeline_id or summary.pipeline or "Pipeline"
    title = f"{_SYMBOL.get(summary.status, '')} {name}: {summary.status}"
    fields = [f"*Organization*\n{summary.org_slug}", f"*Run*\n`{summary.run_id}`"]
    if summary.error_code:
        fields.append(f"*Error*\n`{summary.error_code}`")
    if summary.failed_step:
        fields.append(f"*Failed step*\n{summary.failed_step}")
    if summary.rows_processed is not None:
        fields.append(f"*Rows*\n{summary.rows_processed}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title.strip()[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields[:10]]},
    ]
    if summary.error_message:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{summary.error_message[:2500]}```"}})
    if message:
        blocks.insert(1, {"type": "section", "text": {"type": "mrkdwn", "text": message[:2900]}})
    payload: dict[str, Any] = {"text": f"{title.strip()} (org {summary.org_slug}, run {summary.run_id})",
                               "blocks": blocks}
    for key in ("username", "icon_emoji", "channel"):
        if options.get(key):
            payload[key] = options[key]
    return payload
