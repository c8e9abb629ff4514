"""Helpers for the warehouse, tenancy and KMS tests (no tests here): settings on the emulator with a
private central dataset, and a BigQuery client proxy that counts (or breaks) API calls."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from google.cloud import bigquery

from convergence.settings.model import Settings, load_settings

COUNTED = ("query", "insert_rows_json", "load_table_from_file", "get_table", "create_table", "update_table",
           "delete_table", "get_dataset", "create_dataset", "list_routines")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def emulator_settings(local_stack: Any, **overrides: Any) -> Settings:
    """Settings on the session's emulator; every call gets its own central dataset unless one is given."""
    base: dict[str, Any] = {
        "bigquery_emulator_host": local_stack.bigquery.host, "gcp_project_id": local_stack.project,
        "central_dataset": unique("organizations"), "environment": "development",
        "bigquery_retry_deadline_seconds": 10.0,
    }
    return load_settings(**{**base, **overrides})


class CountingClient:
    """Wraps a bigquery.Client: counts the API calls made through it; `fail` makes the next calls raise."""

    def __init__(self, client: bigquery.Client):
        self._client = client
        self.counts: Counter[str] = Counter()
        self.failures: dict[str, list[BaseException]] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def fail(self, method: str, *errors: BaseException) -> None:
        self.failures.setdefault(method, []).extend(errors)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in COUNTED:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            pending = self.failures.get(name)
            if pending:
                raise pending.pop(0)
            return attr(*args, **kwargs)

        return counted


class ExplodingClient:
    """A client stand-in that fails the test if anything reaches BigQuery."""

    project = "convergence-local"
    location = "US"

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"BigQuery was called ({name}) although the input should have been refused")

        return refuse


def count_rows(client: bigquery.Client, table_id: str, where: str = "TRUE", **params: Any) -> int:
    from convergence.warehouse.query import parameters

    job = client.query(f"SELECT COUNT(*) AS n FROM `{table_id}` WHERE {where}",
                       job_config=bigquery.QueryJobConfig(query_parameters=parameters(params)))
    return int(next(iter(job.result()))["n"])
