"""Following runs through their events (`convergence publish run --wait`).

A follower owns a temporary subscription on the events topic (infra.topology.follower_subscription):
created BEFORE the run requests are published (a subscription only receives what is published after it
exists), deleted afterwards, and set to expire after a day should the process die first. Pub/Sub applies
its filter (one run_id, or one org and pipeline for a backfill); the emulator does not, so events are
also filtered here by run_id.

When is a run over:
- pipeline_completed SUCCESS or TIMEOUT; FAILED unless its error is retryable (the consumer nacks a
  retryable failure: Pub/Sub delivers it again, and after the last attempt it is dead-lettered);
- request_rejected (REJECTED); dead_lettered (DEAD_LETTERED).
A run_id that already succeeded is acked by the consumer without any event: `check_done` (the run log)
is asked about runs that have shown no event for a while.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Self, TextIO

import structlog

from convergence.schemas import EventType, MessageRejected, PipelineEvent, decode_pipeline_event
from convergence.settings import Settings

log = structlog.get_logger(__name__)


class Final(StrEnum):
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    REJECTED = "REJECTED"
    DEAD_LETTERED = "DEAD_LETTERED"
    WAIT_TIMEOUT = "WAIT_TIMEOUT"  # we stopped waiting; the run may still finish


@dataclass
class RunProgress:
    run_id: str
    label: str = ""
    final: Final | None = None
    attempt: int = 0
    steps: list[str] = field(default_factory=list)
    steps_done: int = 0
    current_step: str | None = None
    rows: int = 0
    duration_ms: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    events: int = 0

    @property
    def done(self) -> bool:
        return self.final is not None

    def apply(self, event: PipelineEvent) -> bool:
        """Update from one event; True when the event ended the run."""
        self.events += 1
        kind = event.event_type
        if kind is EventType.PIPELINE_STARTED:
            self.attempt = event.attempt or self.attempt + 1
            steps = event.details.get("steps")
            self.steps = [str(s) for s in steps] if isinstance(steps, list) else []
            self.steps_done, self.rows, self.current_step = 0, 0, None
        elif kind is EventType.STEP_STARTED:
            self.current_step = event.step_id
        elif kind in (EventType.STEP_COMPLETED, EventType.STEP_FAILED):
            self.steps_done += 1
            self.rows += event.rows_processed or 0
            self.current_step = None
        elif kind is EventType.PIPELINE_COMPLETED:
            self.duration_ms = event.duration_ms
            if event.rows_processed is not None:
                self.rows = event.rows_processed
            self._error(event)
            if event.status == "SUCCESS":
                self.final = Final.SUCCESS
            elif event.status == "TIMEOUT":
                self.final = Final.TIMEOUT
            elif not (event.error and event.error.retryable):
                self.final = Final.FAILED
        elif kind is EventType.REQUEST_REJECTED:
            self._error(event)
            self.final = Final.REJECTED
        elif kind is EventType.DEAD_LETTERED:
            self._error(event)
            self.final = Final.DEAD_LETTERED
        return self.final is not None

    def _error(self, event: PipelineEvent) -> None:
        if event.error is not None:
            self.error_code, self.error_message = event.error.code, event.error.message


CheckDone = Callable[[list[str]], Mapping[str, Final]]
OnEvent = Callable[[RunProgress, PipelineEvent], None]


class RunFollower:
    """Context manager: subscription on enter, deleted on exit. Expect run_ids, then wait()."""

    def __init__(self, settings: Settings, *, run_id: str | None = None, org_slug: str | None = None,
                 pipeline: str | None = None, name: str | None = None):
        from convergence.infra.topology import follower_subscription

        self.settings = settings
        self.name = name or f"follow-{uuid.uuid4().hex[:12]}"
        spec = follower_subscription(settings, self.name, run_id=run_id)
        if run_id is None and org_slug and pipeline and '"' not in org_slug + pipeline:
            spec = dataclasses.replace(
                spec, filter=f'attributes.org_slug = "{org_slug}" AND attributes.pipeline = "{pipeline}"')
        self.spec = spec
        self.runs: dict[str, RunProgress] = {}
        self._queue: queue.Queue[bytes] = queue.Queue()
        self._subscriber: Any = None
        self._stream: Any = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        from convergence.infra.apply import ensure_subscription
        from convergence.infra.clients import subscriber_client

        ensure_subscription(self.spec, self.settings)
        try:
            self._subscriber = subscriber_client(self.settings)
            self._stream = self._subscriber.subscribe(self.settings.subscription_path(self.name),
                                                      callback=self._on_message)
        except BaseException:
            self._delete()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            with contextlib.suppress(Exception):
                self._stream.result(timeout=10)
            self._stream = None
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None
        self._delete()

    def _delete(self) -> None:
        from convergence.infra.apply import delete_subscription

        try:
            delete_subscription(self.name, self.settings)
        except Exception as error:  # noqa: BLE001 - it expires by itself after a day
            log.warning("follower subscription not deleted", subscription=self.name, error=str(error)[:200])

    def _on_message(self, message: Any) -> None:
        self._queue.put(message.data)
        message.ack()

    # -- following -------------------------------------------------------------------------------------
    def expect(self, run_id: str, label: str = "") -> RunProgress:
        progress = self.runs.setdefault(run_id, RunProgress(run_id, label or run_id))
        return progress

    @property
    def pending(self) -> list[RunProgress]:
        return [run for run in self.runs.values() if not run.done]

    def wait(self, timeout: float, on_event: OnEvent | None = None, check_done: CheckDone | None = None,
             quiet_seconds: float = 15.0, tick: Callable[[], None] | None = None) -> dict[str, RunProgress]:
        """Until every expected run is over, or `timeout` seconds (the rest become WAIT_TIMEOUT)."""
        deadline = time.monotonic() + timeout
        last_check = time.monotonic()
        while self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                data = self._queue.get(timeout=min(left, 0.5))
            except queue.Empty:
                data = None
            if data is not None:
                self._handle(data, on_event)
            elif tick is not None:
                tick()
            if check_done is not None and time.monotonic() - last_check >= quiet_seconds:
                last_check = time.monotonic()
                silent = [run.run_id for run in self.pending if run.events == 0]
                if silent:
                    for run_id, final in check_done(silent).items():
                        self.runs[run_id].final = final
                        if on_event is not None:
                            on_event(self.runs[run_id], None)  # type: ignore[arg-type]
        for run in self.pending:
            run.final = Final.WAIT_TIMEOUT
        return self.runs

    def _handle(self, data: bytes, on_event: OnEvent | None) -> None:
        try:
            event = decode_pipeline_event(data)
        except MessageRejected as error:
            log.warning("undecodable event ignored", error=str(error)[:200])
            return
        run = self.runs.get(event.run_id or "")
        if run is None or run.done:
            return  # another run's event (the emulator applies no filter), or after the end
        run.apply(event)
        if on_event is not None:
            on_event(run, event)


# -- display -----------------------------------------------------------------------------------------
_MARKS = {EventType.STEP_COMPLETED: "ok", EventType.STEP_FAILED: "FAILED"}


class ProgressPrinter:
    """Step lines on `stream`; on a terminal, also a progress bar redrawn under them."""

    def __init__(self, follower: RunFollower, stream: TextIO | None = None, tty: bool | None = None,
                 width: int = 30):
        self.follower = follower
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.width = width
        self.started = time.monotonic()
        self._bar_shown = False

    def __call__(self, run: RunProgress, event: PipelineEvent | None) -> None:
        line = self.line(run, event)
        if line:
            self._print(line)
        elif self.tty:
            self.redraw()

    def line(self, run: RunProgress, event: PipelineEvent | None) -> str | None:
        prefix = f"{run.label}: " if len(self.follower.runs) > 1 else ""
        if event is None:  # settled from the run log
            return f"{prefix}{run.final} (from the run log; no events for this run_id)"
        kind = event.event_type
        if kind is EventType.PIPELINE_STARTED:
            again = f" (attempt {run.attempt})" if run.attempt > 1 else ""
            return f"{prefix}started{again}: {len(run.steps)} step(s) {', '.join(run.steps)}"
        if kind is EventType.STEP_STARTED:
            return None if self.tty else f"{prefix}  step {event.step_id} running"
        if kind in _MARKS:
            seconds = f" {event.duration_ms / 1000:.1f}s" if event.duration_ms is not None else ""
            rows = f" {event.rows_processed:,} rows" if event.rows_processed is not None else ""
            error = f"  {event.error.code}: {event.error.message[:200]}" if event.error else ""
            return f"{prefix}  step {event.step_id} {event.status or _MARKS[kind]}{rows}{seconds}{error}"
        if kind is EventType.PIPELINE_COMPLETED:
            seconds = f" in {run.duration_ms / 1000:.1f}s" if run.duration_ms is not None else ""
            error = f"  {run.error_code}: {(run.error_message or '')[:300]}" if run.error_code else ""
            if run.final is None:
                return f"{prefix}attempt {run.attempt} FAILED{error} (retryable: Pub/Sub will deliver it again)"
            return f"{prefix}{run.final} {run.rows:,} rows{seconds}{error}"
        if kind in (EventType.REQUEST_REJECTED, EventType.DEAD_LETTERED):
            return f"{prefix}{run.final}  {run.error_code}: {(run.error_message or '')[:300]}"
        return None

    def bar(self) -> str:
        runs = list(self.follower.runs.values())
        elapsed = f"{time.monotonic() - self.started:.0f}s"
        rows = sum(run.rows for run in runs)
        if len(runs) == 1:
            run = runs[0]
            total = max(len(run.steps), 1)
            done = min(run.steps_done, total)
            what = f"{done}/{len(run.steps) or '?'} steps"
            if run.current_step:
                what += f" ({run.current_step})"
        else:
            total = len(runs)
            done = sum(run.done for run in runs)
            ok = sum(run.final is Final.SUCCESS for run in runs)
            what = f"{done}/{total} runs, {ok} ok, {done - ok} not ok"
        filled = int(self.width * done / total) if total else 0
        return f"[{'#' * filled}{'-' * (self.width - filled)}] {what}, {rows:,} rows, {elapsed}"

    def redraw(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + self.bar())
            self.stream.flush()
            self._bar_shown = True

    def _print(self, line: str) -> None:
        if self.tty and self._bar_shown:
            self.stream.write("\r\x1b[K")
        self.stream.write(line + "\n")
        if self.tty:
            self.redraw()
        else:
            self.stream.flush()

    def finish(self) -> None:
        if self.tty and self._bar_shown:
            self.stream.write("\r\x1b[K" + self.bar() + "\n")
            self.stream.flush()
            self._bar_shown = False


def run_log_check(runlog: Any) -> CheckDone:
    """check_done from the run log: a run_id with a SUCCESS row is over (duplicate of a finished run)."""

    def check(run_ids: list[str]) -> dict[str, Final]:
        done: dict[str, Final] = {}
        for run_id in run_ids:
            try:
                if runlog.has_succeeded(run_id):
                    done[run_id] = Final.SUCCESS
            except Exception as error:  # noqa: BLE001 - the events may still come; try again later
                log.warning("run log check failed", run_id=run_id, error=str(error)[:200])
        return done

    return check


def exit_code(runs: Iterable[RunProgress]) -> int:
    """0 all succeeded; 1 any FAILED/TIMEOUT/REJECTED/DEAD_LETTERED; 3 none failed but some still unknown."""
    finals = [run.final for run in runs]
    if all(final is Final.SUCCESS for final in finals):
        return 0
    if any(final not in (Final.SUCCESS, Final.WAIT_TIMEOUT) for final in finals):
        return 1
    return 3


__all__ = ["Final", "ProgressPrinter", "RunFollower", "RunProgress", "exit_code", "run_log_check"]
