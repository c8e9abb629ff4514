"""The warehouse facade outside a run (a CLI command's client and settings) and its blocking reads, for
code already on a worker thread: a missing table reads as None, rows come back as dicts, Google errors
become step errors (against the emulator)."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from convergence.pipeline.errors import ErrorCode, StepError
from convergence.warehouse.client import make_client
from convergence.warehouse.facade import Warehouse
from convergence.warehouse.tables import ensure_dataset
from tests.support.warehouse import CountingClient, emulator_settings, unique

pytestmark = pytest.mark.emulator


@pytest.fixture
def env(local_stack):
    settings = emulator_settings(local_stack)
    client = CountingClient(make_client(settings))
    dataset = unique("facade")
    ensure_dataset(client, dataset)
    return settings, client, dataset


def test_outside_run_reads_through_the_callers_client(env):
    settings, client, dataset = env
    warehouse = Warehouse.outside_run(client, settings, dataset)
    assert warehouse.services is None and warehouse.settings is settings and warehouse.dataset == dataset
    assert warehouse.table_id("t") == f"{client.project}.{dataset}.t"
    assert warehouse.find_table_blocking(warehouse.table_id("missing")) is None

    rows = warehouse.query_blocking("SELECT @n AS n, 'x' AS label", {"n": 2})
    assert rows == [{"n": 2, "label": "x"}]
    assert warehouse.jobs == 1 and client.counts["query"] == 1

    client.create_table(bigquery.Table(warehouse.table_id("t"), schema=[bigquery.SchemaField("n", "INT64")]))
    table = warehouse.find_table_blocking(warehouse.table_id("t"))
    assert table is not None and [f.name for f in table.schema] == ["n"]


def test_blocking_reads_turn_google_errors_into_step_errors(env):
    settings, client, dataset = env
    warehouse = Warehouse.outside_run(client, settings, dataset)
    client.fail("get_table", gexc.Forbidden("no access"))
    with pytest.raises(StepError) as denied:
        warehouse.find_table_blocking(warehouse.table_id("t"))
    assert denied.value.code == ErrorCode.GOOGLE_API_PERMISSION_DENIED and not denied.value.retryable

    client.fail("query", gexc.BadRequest("Syntax error"))
    with pytest.raises(StepError) as bad:
        warehouse.query_blocking("SELEC 1")
    assert bad.value.code == ErrorCode.GOOGLE_API_INVALID_REQUEST


def test_dml_blocking_counts_rows_and_may_accept_a_missing_table(env):
    settings, client, dataset = env
    warehouse = Warehouse.outside_run(client, settings, dataset)
    missing = f"DELETE FROM {warehouse.ref('missing')} WHERE TRUE"
    assert warehouse.dml_blocking(missing, missing_table_ok=True) == 0
    with pytest.raises(StepError) as not_found:
        warehouse.dml_blocking(missing)
    assert not_found.value.code == ErrorCode.GOOGLE_API_NOT_FOUND

    client.create_table(bigquery.Table(warehouse.table_id("t"), schema=[bigquery.SchemaField("n", "INT64")]))
    assert warehouse.dml_blocking(f"INSERT INTO {warehouse.ref('t')} (n) VALUES (1), (2), (3)") == 3
    assert warehouse.dml_blocking(f"DELETE FROM {warehouse.ref('t')} WHERE n <= @n", {"n": 2}) == 2
