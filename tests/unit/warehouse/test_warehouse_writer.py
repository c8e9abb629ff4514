"""The Writer against the emulator: idempotent modes, batching, isolation and error mapping."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc

from convergence.pipeline.errors import PermanentStepError, TransientStepError
from convergence.warehouse.client import make_client
from convergence.warehouse.writer import Writer
from tests.support.warehouse import CountingClient, count_rows, emulator_settings, unique

pytestmark = pytest.mark.emulator

SCHEMA = [
    {"name": "org_slug", "type": "STRING", "mode": "REQUIRED"},
    {"name": "usage_date", "type": "DATE", "mode": "REQUIRED"},
    {"name": "item", "type": "STRING", "mode": "REQUIRED"},
    {"name": "quantity", "type": "INT64"},
    {"name": "cost", "type": "NUMERIC"},
    {"name": "tags", "type": "STRING", "mode": "REPEATED"},
    {"name": "detail", "type": "RECORD", "fields": [{"name": "source", "type": "STRING"}]},
]
EVENTS = [
    {"name": "org_slug", "type": "STRING", "mode": "REQUIRED"},
    {"name": "event_time", "type": "TIMESTAMP", "mode": "REQUIRED"},
    {"name": "name", "type": "STRING"},
]
DAYS = (date(2024, 3, 1), date(2024, 3, 3))


@pytest.fixture(scope="module")
def schema_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("schemas")
    (root / "usage.json").write_text(json.dumps(SCHEMA))
    (root / "events.json").write_text(json.dumps(EVENTS))
    return {"usage": root / "usage.json", "events": root / "events.json"}


@pytest.fixture
def env(local_stack, schema_files):
    settings = emulator_settings(local_stack, write_batch_size=100)
    client = make_client(settings)
    org = unique("acme")
    return settings, client, org, settings.org_dataset(org), schema_files


def rows(org: str, n: int, day: date = DAYS[0], quantity: int = 1, prefix: str = "item"):
    return [{"org_slug": org, "usage_date": day, "item": f"{prefix}{i}", "quantity": quantity, "cost": "0.25",
             "tags": ["a", "b"], "detail": {"source": "test"}} for i in range(n)]


def table_rows(client, table_id: str) -> list[dict]:
    return [dict(r) for r in client.query(
        f"SELECT org_slug, usage_date, item, quantity FROM `{table_id}` ORDER BY org_slug, usage_date, item").result()]


@pytest.mark.parametrize("n", [7, 350])  # one streaming-sized batch; several load batches
def test_range_replace_rerun_leaves_exactly_one_copy(env, n):
    settings, client, org, dataset, files = env
    writer = Writer(client, settings)
    outside = rows(org, 3, day=date(2024, 2, 1), prefix="old")
    writer.write(dataset, "usage", outside, mode="append", org_slug=org, schema_path=files["usage"])
    batch = rows(org, n, DAYS[0]) + rows(org, 2, DAYS[1], prefix="late")
    for _ in range(3):  # a redelivered message runs the same write again
        result = writer.write(dataset, "usage", iter(batch), mode="range_replace", org_slug=org,
                              date_column="usage_date", date_range=DAYS, schema_path=files["usage"])
        assert result.rows_written == n + 2 and result.method == "staged_merge"
    table_id = result.table_id
    got = table_rows(client, table_id)
    assert len(got) == n + 2 + 3
    assert len({(r["usage_date"], r["item"]) for r in got}) == len(got)  # no duplicates
    assert count_rows(client, table_id, "usage_date = @d", d=date(2024, 2, 1)) == 3  # outside the range: kept
    # Nothing left behind: the staging tables are gone.
    assert [t.table_id for t in client.list_tables(f"{client.project}.{dataset}")] == ["usage"]


def test_range_replace_never_touches_another_org(local_stack, schema_files):
    # A shared table (the central dataset is writable by every org): org B's rows in the range survive.
    settings = emulator_settings(local_stack)
    client = make_client(settings)
    writer = Writer(client, settings)
    a, b = unique("orga"), unique("orgb")
    for org in (a, b):
        writer.write(settings.central_dataset, "usage", rows(org, 5), mode="append", org_slug=org,
                     schema_path=schema_files["usage"])
    result = writer.write(settings.central_dataset, "usage", rows(a, 2, quantity=9), mode="range_replace",
                          org_slug=a, date_column="usage_date", date_range=DAYS, schema_path=schema_files["usage"])
    assert count_rows(client, result.table_id, "org_slug = @o", o=a) == 2
    assert count_rows(client, result.table_id, "org_slug = @o AND quantity = 1", o=b) == 5
    # Overwrite is org-scoped too; truncate is the whole table.
    writer.write(settings.central_dataset, "usage", rows(a, 1), mode="overwrite", org_slug=a,
                 schema_path=schema_files["usage"])
    assert count_rows(client, result.table_id, "org_slug = @o", o=b) == 5
    # Merge never matches another org's row even on equal keys.
    writer.write(settings.central_dataset, "usage", rows(a, 3, quantity=7), mode="merge", org_slug=a,
                 key_columns=["usage_date", "item"], schema_path=schema_files["usage"])
    assert count_rows(client, result.table_id, "org_slug = @o AND quantity = 1", o=b) == 5


def test_rows_of_another_org_or_outside_the_range_are_refused_before_writing(env):
    settings, client, org, dataset, files = env
    writer = Writer(client, settings)
    first = writer.write(dataset, "usage", rows(org, 4), mode="range_replace", org_slug=org, date_column="usage_date",
                         date_range=DAYS, schema_path=files["usage"])
    bad_org = rows(org, 150) + rows("someone_else", 1)
    with pytest.raises(PermanentStepError) as caught:
        writer.write(dataset, "usage", bad_org, mode="range_replace", org_slug=org, date_column="usage_date",
                     date_range=DAYS, schema_path=files["usage"])
    assert caught.value.code == "ORG_MISMATCH"
    with pytest.raises(PermanentStepError) as caught:
        writer.write(dataset, "usage", rows(org, 3, day=date(2024, 4, 1)), mode="range_replace", org_slug=org,
                     date_column="usage_date", date_range=DAYS, schema_path=files["usage"])
    assert caught.value.code == "ROW_OUTSIDE_RANGE" and "2024-03-01..2024-03-03" in str(caught.value)
    assert count_rows(client, first.table_id) == 4  # the refused writes changed nothing


def test_merge_upserts_on_keys_last_row_wins(env):
    settings, client, org, dataset, files = env
    writer = Writer(client, settings)
    kwargs = dict(mode="merge", org_slug=org, key_columns=["usage_date", "item"], schema_path=files["usage"])
    writer.write(dataset, "usage", rows(org, 250), **kwargs)
    updated = rows(org, 10, quantity=5) + rows(org, 2, quantity=6) + rows(org, 1, prefix="new")
    for _ in range(2):
        result = writer.write(dataset, "usage", updated, **kwargs)
    assert count_rows(client, result.table_id) == 251
    assert count_rows(client, result.table_id, "quantity = 6") == 2
    assert count_rows(client, result.table_id, "quantity = 5") == 8
    with pytest.raises(PermanentStepError, match="NULL key"):
        writer.write(dataset, "usage", [{"usage_date": DAYS[0], "item": "x", "quantity": None}],
                     **{**kwargs, "key_columns": ["item", "quantity"]})


def test_overwrite_and_truncate_rerun(env):
    settings, client, org, dataset, files = env
    writer = Writer(client, settings)
    for mode in ("overwrite", "truncate"):
        for _ in range(2):
            result = writer.write(dataset, "usage", rows(org, 120), mode=mode, org_slug=org,
                                  schema_path=files["usage"])
        assert count_rows(client, result.table_id) == 120


def test_empty_range_replace_clears_the_range(env):
    settings, client, org, dataset, files = env
    writer = Writer(client, settings)
    writer.write(dataset, "usage", rows(org, 5) + rows(org, 1, day=date(2024, 5, 1)), org_slug=org,
                 schema_path=files["usage"])
    result = writer.write(dataset, "usage", [], mode="range_replace", org_slug=org, date_column="usage_date",
                          date_range=DAYS, schema_path=files["usage"])
    assert result.method == "delete" and result.dml_affected_rows == 5
    assert count_rows(client, result.table_id) == 1


def test_timestamp_range_is_half_open_on_days(env):
    settings, client, org, dataset, files = env
    writer = Writer(client, settings)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    events = [{"event_time": start + timedelta(hours=h), "name": f"e{h}"} for h in range(0, 72, 6)]
    before = [{"event_time": start - timedelta(seconds=1), "name": "before"}]
    after = [{"event_time": start + timedelta(days=3), "name": "after"}]
    writer.write(dataset, "events", before + after, org_slug=org, schema_path=files["events"])
    for _ in range(2):
        result = writer.write(dataset, "events", events, mode="range_replace", org_slug=org,
                              date_column="event_time", date_range=DAYS, schema_path=files["events"])
    assert count_rows(client, result.table_id) == len(events) + 2


def test_small_append_streams_only_when_asked_large_append_loads_in_batches(env, monkeypatch):
    settings, client, org, dataset, files = env
    counting = CountingClient(client)
    writer = Writer(counting, settings)  # type: ignore[arg-type]
    small = writer.write(dataset, "usage", rows(org, 99), org_slug=org, schema_path=files["usage"], streaming=True)
    assert (small.method, small.batches) == ("streaming", 1)
    assert counting.counts["insert_rows_json"] == 1 and counting.counts["load_table_from_file"] == 0
    # By default even a small append is a load job: a later range replace may not touch streamed rows.
    default = writer.write(dataset, "usage", rows(org, 5, prefix="d"), org_slug=org, schema_path=files["usage"])
    assert default.method == "load" and counting.counts["insert_rows_json"] == 1

    produced = 0

    def generate():
        nonlocal produced
        for row in rows(org, 1000, prefix="big"):
            produced += 1
            yield row

    loaded_after: list[int] = []
    real_load = client.load_table_from_file

    def spy(*args, **kwargs):
        loaded_after.append(produced)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(client, "load_table_from_file", spy)
    large = writer.write(dataset, "usage", generate(), org_slug=org, schema_path=files["usage"])
    assert (large.method, large.batches, large.rows_written, large.load_jobs) == ("load", 10, 1000, 1)
    assert loaded_after == [1000]  # ten batches spooled, one load job after the last
    assert count_rows(client, large.table_id) == 1104

    # An append in a range-managed table goes by load job even when small and asked to stream.
    ranged = writer.write(dataset, "usage", rows(org, 3, prefix="r"), org_slug=org, date_column="usage_date",
                          date_range=DAYS, schema_path=files["usage"], streaming=True)
    assert ranged.method == "load"


def test_a_multi_batch_write_is_one_load_job_per_write_and_the_spool_is_a_bounded_file(env, monkeypatch):
    settings, client, org, dataset, files = env
    counting = CountingClient(client)
    spooled: list[tuple[int, int]] = []  # (file size, rows produced so far) at each load job
    produced = 0
    real_load = client.load_table_from_file

    def load(file, *args, **kwargs):
        spooled.append((os.fstat(file.fileno()).st_size, produced))  # a file on disk, not a buffer in RAM
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(client, "load_table_from_file", load)

    def generate(n: int, prefix: str):
        nonlocal produced
        for row in rows(org, n, prefix=prefix):
            produced += 1
            yield row

    writer = Writer(counting, settings)  # type: ignore[arg-type]
    for mode, extra in [("append", {}), ("range_replace", {"date_column": "usage_date", "date_range": DAYS}),
                        ("merge", {"key_columns": ["usage_date", "item"]})]:
        before = dict(counting.counts)
        result = writer.write(dataset, "usage", generate(1000, mode), mode=mode, org_slug=org,
                              schema_path=files["usage"], **extra)
        assert (result.batches, result.rows_written, result.load_jobs) == (10, 1000, 1), mode
        assert counting.counts["load_table_from_file"] - before.get("load_table_from_file", 0) == 1, mode
    # 1000 rows by 10,000-row-or-smaller batches used to be one job per batch; now 3 writes, 3 jobs.
    assert counting.counts["load_table_from_file"] == 3

    # The spool is bounded by bytes: past `spool_bytes` it is loaded and emptied while rows still arrive.
    spooled.clear()
    produced = 0
    # Its own table, and few jobs: BigQuery allows 5 table metadata updates per table per 10 s.
    bounded = Writer(counting, settings, spool_bytes=60_000)  # type: ignore[arg-type]
    result = bounded.write(dataset, "usage_bounded", generate(1000, "bounded"), org_slug=org,
                           schema_path=files["usage"])
    batch_bytes = sum(len(json.dumps(r, default=str, separators=(",", ":"))) + 1 for r in rows(org, 100, prefix="b"))
    assert result.load_jobs == len(spooled) > 1
    assert all(size < 60_000 + batch_bytes for size, _ in spooled)  # at most one batch past the bound
    assert spooled[0][1] < 1000  # the first job went while rows were still being produced
    assert count_rows(client, result.table_id, "item LIKE 'bounded%'") == 1000


def test_invalid_rows_are_permanent_with_a_clear_message(env):
    settings, client, org, dataset, files = env
    writer = Writer(client, settings)
    with pytest.raises(PermanentStepError) as caught:
        writer.write(dataset, "usage", [{"usage_date": DAYS[0], "item": "x", "unknown": 1}], org_slug=org,
                     schema_path=files["usage"])
    assert caught.value.code == "INVALID_ROW" and "unknown" in str(caught.value)
    with pytest.raises(PermanentStepError, match="REQUIRED"):
        writer.write(dataset, "usage", [{"usage_date": DAYS[0]}], org_slug=org, schema_path=files["usage"])
    with pytest.raises(PermanentStepError) as caught:  # BigQuery (the emulator) refuses the value: a 400
        writer.write(dataset, "usage", rows(org, 150) + [{"usage_date": DAYS[0], "item": "x", "quantity": "many"}],
                     org_slug=org, schema_path=files["usage"])
    assert caught.value.code == "GOOGLE_API_INVALID_REQUEST" and "usage" in str(caught.value)
    with pytest.raises(PermanentStepError, match="range_replace needs"):
        writer.write(dataset, "usage", [], mode="range_replace", org_slug=org, schema_path=files["usage"])
    with pytest.raises(PermanentStepError, match="does not exist"):
        writer.write(dataset, "nope", [{"a": 1}], org_slug=org)


def test_bigquery_5xx_is_transient_and_4xx_permanent(env):
    settings, client, org, dataset, files = env
    counting = CountingClient(client)
    writer = Writer(counting, settings)  # type: ignore[arg-type]
    writer.write(dataset, "usage", rows(org, 1), org_slug=org, schema_path=files["usage"])  # table exists now
    counting.fail("load_table_from_file", gexc.ServiceUnavailable("backend down"))
    with pytest.raises(TransientStepError) as caught:
        writer.write(dataset, "usage", rows(org, 200), mode="range_replace", org_slug=org, date_column="usage_date",
                     date_range=DAYS, schema_path=files["usage"])
    assert caught.value.code == "GOOGLE_API_UNAVAILABLE" and "range_replace write to" in str(caught.value)
    counting.fail("insert_rows_json", gexc.Forbidden("no access"))
    with pytest.raises(PermanentStepError) as caught:
        writer.write(dataset, "usage", rows(org, 2), org_slug=org, schema_path=files["usage"], streaming=True)
    assert caught.value.code == "GOOGLE_API_PERMISSION_DENIED"
    assert count_rows(client, f"{client.project}.{dataset}.usage") == 1  # failed writes left nothing


def test_unreachable_bigquery_is_transient(local_stack, schema_files):
    from convergence.devstack.ports import free_port

    settings = emulator_settings(local_stack, bigquery_emulator_host=f"127.0.0.1:{free_port()}",
                                 bigquery_retry_deadline_seconds=0.5)
    writer = Writer(make_client(settings), settings)
    org = unique("acme")
    with pytest.raises(TransientStepError) as caught:
        writer.write(settings.org_dataset(org), "usage", rows(org, 1), org_slug=org,
                     schema_path=schema_files["usage"])
    assert caught.value.retryable
