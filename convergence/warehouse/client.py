"""BigQuery client factory: the local emulator when the settings name one, else Application Default
Credentials (or the credentials passed, e.g. a customer's service account)."""

from __future__ import annotations

from typing import Any

from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

from convergence.settings import Settings


def make_client(settings: Settings, project: str | None = None, credentials: Any = None) -> bigquery.Client:
    project = project or settings.gcp_project_id
    if settings.bigquery_endpoint:
        return bigquery.Client(
            project=project,
            credentials=credentials or AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": settings.bigquery_endpoint},
            location=settings.bigquery_location,
        )
    return bigquery.Client(project=project, credentials=credentials, location=settings.bigquery_location)


# For callers without settings: the same bound as the settings' default.
BOUNDED_RETRY = DEFAULT_RETRY.with_timeout(60.0)


def call_retry(settings: Settings) -> Retry:
    """The client's retry of one API call, bounded: its default keeps retrying a 5xx for 10 minutes."""
    return DEFAULT_RETRY.with_timeout(settings.bigquery_retry_deadline_seconds)


def job_retry(settings: Settings) -> Retry:
    """Retry of a whole query job (rate limits, backend errors), bounded the same way."""
    return DEFAULT_JOB_RETRY.with_timeout(settings.bigquery_retry_deadline_seconds)
