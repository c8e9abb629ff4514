"""The conformance layer itself: recording in child processes, Google's SQL front end, BigQuery's limits."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convergence.warehouse.googlesql import GoogleSql, Statement, TableSchema, index_tables
from tests.gcp_conformance import limits, recorder
from tests.gcp_conformance.analysis import analyze, read_records

pytestmark = pytest.mark.emulator

CHILD = textwrap.dedent("""
    import sys
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery
    client = bigquery.Client(project=sys.argv[1], credentials=AnonymousCredentials(),
                             client_options={"api_endpoint": sys.argv[2]})
    print(list(client.query(sys.argv[3]).result()))
""")


def _child(local_stack: Any, tmp_path: Path, sql: str, test_name: str) -> Path:
    """Runs `sql` in a separate Python process with the session's recording set-up, into its own folder."""
    record_dir = tmp_path / "record"
    record_dir.mkdir()
    from tests.gcp_conformance.plugin import AUTOLOAD, REPO

    pythonpath = os.pathsep.join([str(AUTOLOAD), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, recorder.RECORD_DIR_ENV: str(record_dir), recorder.CURRENT_TEST_ENV: test_name,
           "PYTHONPATH": pythonpath}
    subprocess.run([sys.executable, "-c", CHILD, local_stack.project, local_stack.bigquery.endpoint, sql],  # noqa: S603
                   env=env, check=True, capture_output=True, timeout=120)
    return record_dir


def test_a_planted_reserved_alias_sent_by_a_child_process_fails_naming_statement_message_and_test(
        local_stack: Any, tmp_path: Path) -> None:
    planted = "SELECT 1 AS at"  # DuckDB (the emulator) runs it; BigQuery reserves AT
    record_dir = _child(local_stack, tmp_path, planted, "tests/x.py::test_planted")
    count, findings = analyze(record_dir)
    assert count == 1
    assert len(findings) == 1
    finding = findings[0]
    assert finding.sql == planted
    assert "Unexpected keyword AT" in finding.message
    assert finding.test == "tests/x.py::test_planted"
    assert "tests/x.py::test_planted" in finding.describe() and planted in finding.describe()


def test_the_same_statement_with_a_plain_alias_passes(local_stack: Any, tmp_path: Path) -> None:
    record_dir = _child(local_stack, tmp_path, "SELECT 1 AS changed_at", "t")
    assert analyze(record_dir) == (1, [])


def test_an_aggregate_of_a_select_alias_in_having_is_refused_and_the_qualified_form_passes() -> None:
    from convergence.processors._llm import reconcile

    table = TableSchema("p.d.lines", [{"name": "cost_date", "type": "DATE"}, {"name": "model", "type": "STRING"},
                                      {"name": "token_type", "type": "STRING"}, {"name": "cost", "type": "NUMERIC"}])
    tables = index_tables([table])
    lines = "SELECT cost_date, model, token_type, cost FROM `p.d.lines`"
    params = {"org_slug": {"type": "STRING"}, "run_id": {"type": "STRING"}, "tolerance_micros": {"type": "INT64"},
              "now": {"type": "TIMESTAMP"}}
    fixed = reconcile._SELECT.format(calculated=lines, billed=lines)
    assert GoogleSql.shared().check(Statement(fixed, params), tables) is None
    old = fixed.replace("HAVING SUM(calc_lines.cost) != 0", "HAVING SUM(cost) != 0")
    refusal = GoogleSql.shared().check(Statement(old, params), tables)
    assert refusal is not None and "Aggregations of aggregations" in refusal.message


def test_parameters_are_typed_and_undeclared_ones_refused() -> None:
    sql = "SELECT DATE_ADD(@day, INTERVAL 1 DAY) AS next_day"
    assert GoogleSql.shared().check(Statement(sql, {"day": {"type": "DATE"}})) is None
    refused = GoogleSql.shared().check(Statement(sql, {"day": {"type": "BOOL"}}))
    assert refused is not None and "DATE_ADD" in refused.message
    assert GoogleSql.shared().check(Statement(sql)) is not None


def test_ingestion_time_partitioned_tables_have_partition_pseudo_columns() -> None:
    resource = {"tableReference": {"projectId": "p", "datasetId": "billing", "tableId": "export"},
                "schema": {"fields": [{"name": "cost", "type": "FLOAT"}]}, "timePartitioning": {"type": "DAY"}}
    tables = index_tables([TableSchema.from_resource(resource)])
    sql = "SELECT SUM(cost) AS total FROM `p.billing.export` WHERE _PARTITIONDATE = @day AND _PARTITIONTIME IS NOT NULL"
    assert GoogleSql.shared().check(Statement(sql, {"day": {"type": "DATE"}}), tables) is None


def test_scripts_go_through_the_script_parser() -> None:
    good = "DECLARE n INT64 DEFAULT 1; CREATE TEMP TABLE t AS SELECT n AS x; SELECT x FROM t;"
    assert GoogleSql.shared().check(Statement(good)) is None
    bad = "CREATE OR REPLACE PROCEDURE `p.d.proc`(a STRING) BEGIN SELECT a AS at; END"
    assert "Unexpected keyword AT" in GoogleSql.shared().check(Statement(bad)).message


def test_qualify_stands_without_where_as_in_bigquery() -> None:
    sql = "SELECT x FROM UNNEST([1, 2]) AS x QUALIFY ROW_NUMBER() OVER (ORDER BY x) = 1"
    assert GoogleSql.shared().check(Statement(sql)) is None


# ---- BigQuery limits ----


@pytest.fixture
def own_violations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any) -> Iterator[Path]:
    """Violations this test provokes on purpose go to its own folder, not the session's; the layer is on
    only for this test unless the session plugin turned it on for all."""
    folder = tmp_path / "violations"
    folder.mkdir()
    monkeypatch.setenv(recorder.RECORD_DIR_ENV, str(folder))
    monkeypatch.setenv(recorder.CURRENT_TEST_ENV, request.node.nodeid)
    recorder.install()
    was_on = limits._enabled is not None
    yield folder
    if not was_on:
        limits.disable()


def _dataset(bq_client: Any, name: str) -> str:
    from google.cloud import bigquery

    dataset = f"{bq_client.project}.{name}"
    bq_client.create_dataset(dataset, exists_ok=True)
    table = bigquery.Table(f"{dataset}.t", schema=[bigquery.SchemaField("id", "INT64"),
                                                    bigquery.SchemaField("v", "STRING")])
    bq_client.create_table(table, exists_ok=True)
    return f"{dataset}.t"


def test_dml_over_rows_in_the_streaming_buffer_is_refused(bq_client: Any, own_violations: Path) -> None:
    assert limits.enable() is not None
    table = _dataset(bq_client, "limits_stream")
    assert bq_client.insert_rows_json(table, [{"id": 1, "v": "a"}]) == []
    with pytest.raises(limits.BigQueryLimitExceeded, match=r"streaming buffer.*last 30 minutes"):
        bq_client.query(f"UPDATE `{table}` SET v = 'b' WHERE id = 1").result()
    # A MERGE that only inserts does not touch buffered rows: allowed.
    bq_client.query(f"MERGE `{table}` T USING (SELECT 2 AS id) S ON T.id = S.id "
                    "WHEN NOT MATCHED THEN INSERT (id, v) VALUES (S.id, 'c')").result()
    [violation] = [r for r in read_records(own_violations) if r["kind"] == "limit_violation"]
    assert violation["limit"] == "DML over rows in the streaming buffer"
    assert violation["test"].endswith("test_dml_over_rows_in_the_streaming_buffer_is_refused")


def test_table_metadata_updates_past_5_per_10_seconds_are_refused(bq_client: Any, own_violations: Path) -> None:
    limits.enable()
    table_id = _dataset(bq_client, "limits_meta")
    table = bq_client.get_table(table_id)
    with pytest.raises(limits.BigQueryLimitExceeded, match=r"5 per 10 seconds"):
        for i in range(7):
            table.description = f"update {i}"
            table = bq_client.update_table(table, ["description"])


def _job(job_id: str, sql: str) -> dict[str, Any]:
    return {"jobReference": {"jobId": job_id}, "configuration": {"query": {"query": sql}}}


def test_the_mutating_dml_queue_is_2_running_and_20_queued(tmp_path: Path, own_violations: Path) -> None:
    layer = limits.Limits(tmp_path / "state")
    for job in range(22):
        layer.before("POST", "/projects/p/jobs", _job(f"j{job}", "DELETE FROM `p.d.t` WHERE 1=1"))
    with pytest.raises(limits.BigQueryLimitExceeded, match=r"2 running and 20 queued"):
        merge = "MERGE `p.d.t` T USING u S ON TRUE WHEN MATCHED THEN DELETE"
        layer.before("POST", "/projects/p/jobs", _job("j22", merge))
    layer.after("GET", "/projects/p/queries/j0", None, {"jobReference": {"jobId": "j0"}, "jobComplete": True})
    layer.before("POST", "/projects/p/jobs", _job("j23", "UPDATE `p.d.t` SET v = 1 WHERE TRUE"))


def test_query_text_past_1024_kb_is_refused(tmp_path: Path, own_violations: Path) -> None:
    layer = limits.Limits(tmp_path / "state")
    with pytest.raises(limits.BigQueryLimitExceeded, match=r"1,024 KB"):
        layer.before("POST", "/projects/p/queries", {"query": "SELECT 1 " + " " * (1024 * 1024)})


def test_table_modifications_past_1500_a_day_are_refused(tmp_path: Path, own_violations: Path) -> None:
    layer = limits.Limits(tmp_path / "state")
    for _ in range(1_500):
        layer._modification("p.d.t", "load job")
    with pytest.raises(limits.BigQueryLimitExceeded, match=r"1,500"):
        layer._modification("p.d.t", "load job")


def test_dml_is_not_a_table_modification(tmp_path: Path, own_violations: Path) -> None:
    """DML does not count toward the 1,500 a day (it has its own concurrency limit); load jobs do."""
    layer = limits.Limits(tmp_path / "state")
    for i in range(1_501):
        layer.before("POST", "/projects/p/jobs", _job(f"i{i}", "INSERT INTO `p.d.t` (v) VALUES (1)"))
    assert not (tmp_path / "state" / "modifications").exists() or not any(
        (tmp_path / "state" / "modifications").iterdir())


def test_which_tables_a_statement_writes() -> None:
    found = limits.targeted_statements(
        "MERGE INTO `p.d.a` T USING s ON TRUE WHEN MATCHED THEN UPDATE SET x = 1; INSERT INTO d.b (x) VALUES (1);"
        " DELETE c WHERE TRUE; CREATE TEMP TABLE tmp AS SELECT 1 AS x", "p", "p.def")
    assert [(s.kind, s.table_id, s.mutates_existing_rows) for s in found] == [
        ("MERGE", "p.d.a", True), ("INSERT", "p.d.b", False), ("DELETE", "p.def.c", True)]
