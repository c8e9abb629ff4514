"""structlog configured for Cloud Logging.

JSON lines carry `severity`, `message`, `time` and the Cloud Logging trace field; run, org and trace ids
are bound with contextvars so every line of a run carries them. Console rendering when a terminal is
attached (LOG_FORMAT=auto).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, merge_contextvars

_SEVERITY = {
    "debug": "DEBUG", "info": "INFO", "warning": "WARNING", "warn": "WARNING",
    "error": "ERROR", "exception": "ERROR", "critical": "CRITICAL",
}
_TRACE_FIELD = "logging.googleapis.com/trace"
# Values of these keys are never logged, whatever the caller passes.
_SECRET_KEYS = re.compile(r"(secret|password|token|api[_-]?key|credential|authorization|private[_-]?key)", re.I)
_project_id = "convergence-local"


def _cloud_logging_shape(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event["severity"] = _SEVERITY.get(method, "DEFAULT")
    event["message"] = event.pop("event", "")
    trace_id = event.get("trace_id")
    if trace_id:
        event[_TRACE_FIELD] = f"projects/{_project_id}/traces/{trace_id}"
    return event


def redact_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if key not in ("event", "message") and _SECRET_KEYS.search(key) and not key.endswith("_id"):
            event[key] = "[REDACTED]"
    return event


def _stderr_logger(*_: Any) -> structlog.PrintLogger:
    # sys.stderr looked up per logger, not bound once: it may be replaced (pytest capture, daemons).
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: str = "INFO", fmt: str = "auto", project_id: str | None = None) -> None:
    global _project_id
    if project_id:
        _project_id = project_id
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[Any] = [
        merge_contextvars,
        structlog.processors.add_log_level,
        redact_secrets,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        structlog.processors.format_exc_info,
    ]
    renderer: list[Any] = (
        [structlog.dev.ConsoleRenderer()]
        if use_console
        else [_cloud_logging_shape, structlog.processors.JSONRenderer(sort_keys=False)]
    )
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=shared + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # The Google client libraries log through the standard library: keep them quiet unless asked.
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stderr)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)


@contextmanager
def run_context(**ids: Any) -> Iterator[None]:
    """Bind run/org/trace ids to every log line inside the block (contextvars: per task and thread)."""
    with bound_contextvars(**{k: v for k, v in ids.items() if v is not None}):
        yield


def bind(**ids: Mapping[str, Any] | Any) -> None:
    bind_contextvars(**ids)
