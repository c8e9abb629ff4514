"""BigQuery client factory: the local emulator when the settings name one, else Application Default
Credentials (or the credentials passed, e.g. a customer's service account)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

from convergence.settings import Settings

FirstUseCheck = Callable[[bigquery.Client, Settings], None]
_first_use_check: FirstUseCheck | None = None
_checked_endpoints: set[str] = set()
_check_lock = threading.Lock()


@contextmanager
def check_before_first_use(check: FirstUseCheck) -> Iterator[None]:
    """While inside, the first client made for each endpoint goes through `check` before it is returned.

    One-shot commands (convergence.cli) use it to fail within seconds on an endpoint that does not answer,
    instead of through the long retries every later call has."""
    global _first_use_check
    with _check_lock:
        _first_use_check = check
        _checked_endpoints.clear()
    try:
        yield
    finally:
        with _check_lock:
            _first_use_check = None
            _checked_endpoints.clear()


def make_client(settings: Settings, project: str | None = None, credentials: Any = None) -> bigquery.Client:
    project = project or settings.gcp_project_id
    if settings.bigquery_endpoint:
        client = bigquery.Client(
            project=project,
            credentials=credentials or AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": settings.bigquery_endpoint},
            location=settings.bigquery_location,
        )
    else:
        client = bigquery.Client(project=project, credentials=credentials, location=settings.bigquery_location)
    with _check_lock:
        endpoint = settings.bigquery_endpoint or "bigquery.googleapis.com"
        if _first_use_check is not None and endpoint not in _checked_endpoints:
            _first_use_check(client, settings)  # raises when the endpoint does not answer
            _checked_endpoints.add(endpoint)
    return client


# For callers without settings: the same bound as the settings' default.
BOUNDED_RETRY = DEFAULT_RETRY.with_timeout(60.0)


def call_retry(settings: Settings) -> Retry:
    """The client's retry of one API call, bounded: its default keeps retrying a 5xx for 10 minutes."""
    return DEFAULT_RETRY.with_timeout(settings.bigquery_retry_deadline_seconds)


def job_retry(settings: Settings) -> Retry:
    """Retry of a whole query job (rate limits, backend errors), bounded the same way."""
    return DEFAULT_JOB_RETRY.with_timeout(settings.bigquery_retry_deadline_seconds)
