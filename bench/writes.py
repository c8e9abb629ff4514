"""Benchmark of the warehouse write path and the run log.

1. rows/s of `Writer.write` for N rows (append by load jobs; range_replace through the staging table, twice
   to show the re-run), against a bare `insert_rows_json` and bare load jobs of the same rows, in the same
   run, on the same emulator.
2. Peak Python heap of a Writer append fed by a generator (memory bounded by the batch, not by N).
3. BigQuery calls (API operations and HTTP requests) per pipeline run for logging: a 5-step run through
   RunLog (target: at most 4).

    .venv/bin/python bench/writes.py [--rows 100000] [--batch-size 1000]

Uses BIGQUERY_EMULATOR_HOST when set, else starts its own emulator.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import tracemalloc
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from google.cloud import bigquery  # noqa: E402

from convergence.devstack.bigquery_emulator import BigQueryEmulator  # noqa: E402
from convergence.pipeline.results import PipelineResult, RunStatus, StepResult, StepStatus  # noqa: E402
from convergence.settings.model import Settings, load_settings  # noqa: E402
from convergence.warehouse.bootstrap import bootstrap  # noqa: E402
from convergence.warehouse.client import make_client  # noqa: E402
from convergence.warehouse.runlog import RunLog  # noqa: E402
from convergence.warehouse.tables import ensure_dataset, ensure_table  # noqa: E402
from convergence.warehouse.writer import Writer  # noqa: E402

SCHEMA = [
    {"name": "org_slug", "type": "STRING", "mode": "REQUIRED"},
    {"name": "usage_date", "type": "DATE", "mode": "REQUIRED"},
    {"name": "provider", "type": "STRING"},
    {"name": "model", "type": "STRING"},
    {"name": "line_item", "type": "STRING"},
    {"name": "input_tokens", "type": "INT64"},
    {"name": "output_tokens", "type": "INT64"},
    {"name": "cost_usd", "type": "NUMERIC"},
    {"name": "extracted_at", "type": "TIMESTAMP"},
]
DAY = date(2026, 1, 15)


def make_rows(org: str, n: int):
    stamp = datetime(2026, 1, 16, tzinfo=UTC).isoformat()
    for i in range(n):
        yield {"org_slug": org, "usage_date": DAY.isoformat(), "provider": "openai", "model": f"gpt-{i % 50}",
               "line_item": f"item-{i}", "input_tokens": i * 3, "output_tokens": i, "cost_usd": f"{i / 1000:.6f}",
               "extracted_at": stamp}


class HttpCounter:
    """Counts HTTP requests a client makes (every API call, poll and upload part)."""

    def __init__(self, client: bigquery.Client):
        self.count = 0
        session = client._http
        original = session.request

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(*args, **kwargs)

        session.request = counted


class CallCounter:
    """Counts API operations through a client (query, insert_rows_json, load...)."""

    def __init__(self, client: bigquery.Client):
        self._client = client
        self.counts: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] += 1
            return attr(*args, **kwargs)

        return counted


def timed(label: str, n: int, fn) -> dict[str, Any]:
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    line = {"case": label, "rows": n, "seconds": round(seconds, 3), "rows_per_s": round(n / seconds)}
    print(f"  {label:<52} {seconds:7.2f} s  {n / seconds:>10,.0f} rows/s", flush=True)
    return line


def fresh_table(client: bigquery.Client, dataset: str, schema_path: Path) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    ensure_table(client, dataset, name, schema_path)
    return name


def bench_writes(settings: Settings, client: bigquery.Client, rows: int, schema_path: Path) -> list[dict[str, Any]]:
    org = f"bench_{uuid.uuid4().hex[:6]}"
    dataset = settings.org_dataset(org)
    ensure_dataset(client, dataset)
    writer = Writer(client, settings)
    data = list(make_rows(org, rows))
    results = []
    print(f"\n1. {rows:,} rows, batch size {settings.write_batch_size} (emulator)")

    table = fresh_table(client, dataset, schema_path)
    results.append(timed("Writer.write append (load jobs per batch)", rows, lambda: writer.write(
        dataset, table, iter(data), mode="append", org_slug=org, schema_path=schema_path)))
    table = fresh_table(client, dataset, schema_path)
    for attempt in ("first run", "re-run"):
        results.append(timed(f"Writer.write range_replace ({attempt})", rows, lambda: writer.write(
            dataset, table, iter(data), mode="range_replace", org_slug=org, date_column="usage_date",
            date_range=(DAY, DAY), schema_path=schema_path)))
    copies = next(iter(client.query(f"SELECT COUNT(*) AS n FROM `{client.project}.{dataset}.{table}`").result()))["n"]
    print(f"  after the re-run the table holds {copies:,} rows (one copy)")

    table_id = f"{client.project}.{dataset}.{fresh_table(client, dataset, schema_path)}"

    def bare_stream() -> None:
        for i in range(0, rows, 10_000):  # 10k rows per request: BigQuery's recommended maximum
            errors = client.insert_rows_json(table_id, data[i:i + 10_000])
            assert not errors, errors[:1]

    results.append(timed("bare insert_rows_json (10k rows per request)", rows, bare_stream))

    def bare_load(chunk: int) -> None:
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON)
        for i in range(0, rows, chunk):
            payload = "\n".join(json.dumps(r) for r in data[i:i + chunk]).encode()
            client.load_table_from_file(io.BytesIO(payload), table_id, job_config=config).result()

    table_id = f"{client.project}.{dataset}.{fresh_table(client, dataset, schema_path)}"
    results.append(timed(f"bare load jobs ({settings.write_batch_size} rows each)", rows,
                         lambda: bare_load(settings.write_batch_size)))
    table_id = f"{client.project}.{dataset}.{fresh_table(client, dataset, schema_path)}"
    results.append(timed("bare single load job (all rows at once)", rows, lambda: bare_load(rows)))
    return results


def bench_memory(settings: Settings, client: bigquery.Client, rows: int, schema_path: Path) -> dict[str, Any]:
    org = f"bench_{uuid.uuid4().hex[:6]}"
    dataset = settings.org_dataset(org)
    ensure_dataset(client, dataset)
    writer = Writer(client, settings)
    print(f"\n2. peak Python heap of Writer.write(append) fed by a generator (batch {settings.write_batch_size})")
    out = {}
    for n in (rows // 10, rows):
        table = fresh_table(client, dataset, schema_path)
        tracemalloc.start()
        writer.write(dataset, table, make_rows(org, n), org_slug=org, schema_path=schema_path)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[n] = round(peak / 1e6, 1)
        print(f"  {n:>9,} rows: peak {peak / 1e6:6.1f} MB")
    return out


def bench_runlog(settings: Settings, client: bigquery.Client, steps: int = 5) -> dict[str, Any]:
    print(f"\n3. BigQuery calls for logging one {steps}-step pipeline run")
    assert bootstrap(client, settings).ok
    http = HttpCounter(client)
    calls = CallCounter(client)
    runlog = RunLog(calls, settings)  # type: ignore[arg-type]
    run_id, org = f"run_{uuid.uuid4().hex}", "bench_org"
    now = datetime.now(UTC)
    before = http.count
    runlog.run_started(run_id=run_id, org_slug=org, pipeline_id="bench_org-openai-usage", pipeline="openai/usage_cost",
                       trigger="adhoc", attempt=1, parameters={"start_date": "2026-01-15"})
    result = PipelineResult(
        pipeline_id="bench_org-openai-usage", run_id=run_id, org_slug=org, status=RunStatus.SUCCESS, started_at=now,
        ended_at=now + timedelta(seconds=2), duration_ms=2000,
        steps=[StepResult(step_id=f"step_{i}", ps_type="openai.usage", status=StepStatus.SUCCESS, started_at=now,
                          ended_at=now, duration_ms=100, rows_processed=1000) for i in range(steps)])
    runlog.run_finished(result, pipeline="openai/usage_cost", trigger="adhoc", attempt=1)
    by_method = dict(calls.counts)
    api_calls = sum(by_method.values())
    requests = http.count - before
    assert runlog.latest_run(run_id, org).status == "SUCCESS"  # the rows are there (not counted)
    print(f"  API calls: {api_calls} {by_method}; HTTP requests: {requests}; target <= 4")
    return {"steps": steps, "api_calls": api_calls, "http_requests": requests, "by_method": by_method}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    emulator = None
    host = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if not host:
        emulator = BigQueryEmulator()
        emulator.start()
        host = emulator.host
    try:
        settings = load_settings(bigquery_emulator_host=host, write_batch_size=args.batch_size,
                                 central_dataset=f"bench_central_{uuid.uuid4().hex[:6]}")
        client = make_client(settings)
        schema_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_schema_{uuid.uuid4().hex[:6]}.json"
        schema_path.write_text(json.dumps(SCHEMA))
        report = {
            "writes": bench_writes(settings, client, args.rows, schema_path),
            "peak_heap_mb": bench_memory(settings, client, args.rows, schema_path),
            "runlog": bench_runlog(settings, client),
        }
        schema_path.unlink(missing_ok=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
    finally:
        if emulator is not None:
            emulator.stop()


if __name__ == "__main__":
    main()
