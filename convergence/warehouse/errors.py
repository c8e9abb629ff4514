"""Google API failures as pipeline errors: 5xx, rate limits and network trouble are transient (Pub/Sub
redelivers), other 4xx are permanent. The consumer registers `classify_google_error` with the executor;
the Writer raises the matching StepError itself so processors get a clear message."""

from __future__ import annotations

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from convergence.pipeline.errors import ErrorCode, PermanentStepError, StepError, TransientStepError
from convergence.pipeline.results import ErrorInfo

_RETRYABLE_REASONS = frozenset({"rateLimitExceeded", "quotaExceeded", "backendError", "internalError",
                                "badGateway", "timeout", "jobBackendError", "jobInternalError"})
_MAX_MESSAGE = 600


def _reasons(error: gexc.GoogleAPICallError) -> set[str]:
    return {str(item.get("reason")) for item in (error.errors or []) if isinstance(item, dict)}


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _network_error(error: BaseException) -> bool:
    try:
        import requests
    except ImportError:  # pragma: no cover - requests comes with google-cloud-core
        return False
    return isinstance(error, requests.ConnectionError | requests.Timeout)


def classify_google_error(error: BaseException) -> ErrorInfo | None:
    """ErrorInfo for google.api_core / google.auth / transport errors; None for anything else."""
    if isinstance(error, StepError):
        return None
    if isinstance(error, gexc.RetryError):
        cause = error.cause
        detail = f"{type(cause).__name__}: {cause}" if cause else str(error)
        return ErrorInfo(code=ErrorCode.GOOGLE_API_UNAVAILABLE, retryable=True,
                         message=_short(f"gave up after retrying: {detail}"))
    if isinstance(error, gexc.GoogleAPICallError):
        return _classify_call_error(error)
    if isinstance(error, auth_exc.RefreshError):
        return ErrorInfo(code=ErrorCode.GOOGLE_AUTH_ERROR, retryable=False,
                         message=_short(f"credentials refused: {error}"))
    if isinstance(error, auth_exc.TransportError) or _network_error(error):
        return ErrorInfo(code=ErrorCode.NETWORK_ERROR, retryable=True,
                         message=_short(f"{type(error).__name__}: {error}"))
    return None


def _classify_call_error(error: gexc.GoogleAPICallError) -> ErrorInfo:
    status = error.code if isinstance(error.code, int) else None
    reasons = _reasons(error)
    message = _short(f"{status or ''} {error.message}".strip())
    if status in (429,) or reasons & {"rateLimitExceeded", "quotaExceeded"}:
        return ErrorInfo(code=ErrorCode.GOOGLE_API_RATE_LIMITED, retryable=True, message=message)
    if (status is not None and (status >= 500 or status == 408)) or reasons & _RETRYABLE_REASONS:
        return ErrorInfo(code=ErrorCode.GOOGLE_API_UNAVAILABLE, retryable=True, message=message)
    code = {400: ErrorCode.GOOGLE_API_INVALID_REQUEST, 401: ErrorCode.GOOGLE_API_PERMISSION_DENIED,
            403: ErrorCode.GOOGLE_API_PERMISSION_DENIED, 404: ErrorCode.GOOGLE_API_NOT_FOUND,
            409: ErrorCode.GOOGLE_API_CONFLICT, 412: ErrorCode.GOOGLE_API_CONFLICT}.get(status or 0,
                                                                                    ErrorCode.GOOGLE_API_ERROR)
    return ErrorInfo(code=code, retryable=False, message=message)


def to_step_error(error: BaseException, doing: str) -> StepError:
    """The StepError a processor should see for `error` raised while `doing` (e.g. "load into p.d.t")."""
    info = classify_google_error(error)
    if info is None:
        return PermanentStepError(f"BigQuery {doing} failed: {type(error).__name__}: {_short(str(error))}",
                                  code=ErrorCode.WAREHOUSE_ERROR)
    cls = TransientStepError if info.retryable else PermanentStepError
    return cls(f"BigQuery {doing} failed: {info.message}", code=info.code)


def is_not_found(error: BaseException) -> bool:
    return isinstance(error, gexc.NotFound)
