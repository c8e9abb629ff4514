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


# Secrets inside free text: a header line a client sent (aiohttp quotes malformed ones), a URL, an error.
_TEXT_SECRETS = [
    # a credential header, as a raw header line or a repr'd mapping: mask the rest of its value
    re.compile(r"(?i)\b((?:x-api-key|x-ca-root-key|x-goog-api-key|(?:proxy-)?authorization|cookie|set-cookie)"
               r"[\"']?\s*[:=]\s*[\"']?)[^\"'\\\r\n]+"),
    # `token=v` (a query string, a form) or `"api_key": "v"` (JSON, a repr'd dict); not prose like "token: b'..'"
    re.compile(r"(?i)\b((?:api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|id[_-]?token|token|secret"
               r"|client[_-]?secret|password|passwd|private[_-]?key|signature|sig)(?:=|[\"']\s*:\s*[\"']?))"
               r"[^\s\"'\\,;&}]+"),
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),  # a token without its header name
    # an org API key (convergence/tenancy/api_keys.py), also glued to other bytes or cut short by a truncating logger
    re.compile(r"[a-z0-9_]*_api_[A-Za-z0-9]{8,}"),
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)*"),  # a JWT (OIDC, ID tokens), whole or cut short
    re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"),  # provider keys (OpenAI, Anthropic `sk-ant-...`)
    re.compile(r"\bxox[abpr]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\bya29\.[A-Za-z0-9._-]{10,}"),  # Google OAuth access tokens
    re.compile(r"(?<=hooks\.slack\.com/services/)[^\s\"'\\]+"),  # the webhook URL's path is its secret
]


def mask_text(text: str) -> str:
    """`text` with every secret-shaped value replaced by [REDACTED]; names are kept so the line stays useful."""
    if not text:
        return text
    for pattern in _TEXT_SECRETS[:2]:
        text = pattern.sub(lambda m: m.group(1) + "[REDACTED]", text)
    text = _TEXT_SECRETS[2].sub(lambda m: m.group(1) + " [REDACTED]", text)
    for pattern in _TEXT_SECRETS[3:]:
        text = pattern.sub("[REDACTED]", text)
    return text


def _is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEYS.search(key)) and not key.endswith("_id")


def _masked(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if depth > 4:
        return value
    if isinstance(value, Mapping):
        return {k: "[REDACTED]" if _is_secret_key(k) else _masked(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v, depth + 1) for v in value]
    return value


def redact_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if key not in ("event", "message") and _is_secret_key(key):
            event[key] = "[REDACTED]"
        elif key != "exc_info":
            event[key] = _masked(event[key])
    return event


def _mask_rendered(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    # After format_exc_info: a traceback quotes what the exception carried (aiohttp: the raw header line).
    for key in ("exception", "stack"):
        if isinstance(event.get(key), str):
            event[key] = mask_text(event[key])
    return event


class _ClientParseErrors(logging.Filter):
    """aiohttp logs a request it cannot parse as an ERROR with a traceback that quotes the raw bytes. That is
    the client's fault and aiohttp has already answered 400: one WARNING line, masked, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if record.name == "aiohttp.server" and _is_http_parse_error(error):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "malformed HTTP request refused with 400: %s"
            record.args = (" ".join(str(error).split())[:500],)
            record.exc_info = record.exc_text = None
        return True


def _is_http_parse_error(error: BaseException | None) -> bool:
    if error is None:
        return False
    try:
        from aiohttp.http_exceptions import HttpProcessingError
    except ImportError:  # pragma: no cover - aiohttp is a dependency
        return False
    return isinstance(error, HttpProcessingError)


class _StderrHandler(logging.StreamHandler):
    """A handler on whatever sys.stderr is now (pytest capture and daemons replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


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
        _mask_rendered,
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
    _route_standard_logging(shared, renderer, max(numeric_level, logging.WARNING))


def _route_standard_logging(shared: list[Any], renderer: list[Any], level: int) -> None:
    """Standard-library loggers (aiohttp.server, aiohttp.access, asyncio, the Google clients, warnings) render
    through the same pipeline: the same JSON shape, the same masking. Quiet below WARNING unless asked."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    handler.addFilter(_ClientParseErrors())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler) or type(h) is logging.StreamHandler]:
        root.removeHandler(old)  # basicConfig's plain-text handler, or ours from an earlier call
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)


@contextmanager
def run_context(**ids: Any) -> Iterator[None]:
    """Bind run/org/trace ids to every log line inside the block (contextvars: per task and thread)."""
    with bound_contextvars(**{k: v for k, v in ids.items() if v is not None}):
        yield


def bind(**ids: Mapping[str, Any] | Any) -> None:
    bind_contextvars(**ids)
