"""Benchmark of generic.api_extractor: rows/s of a full extraction (HTTP pages -> raw JSON rows ->
BigQuery load jobs) against, in the same run,

- the source ceiling: the same pages fetched and decoded through the same HTTP client, not loaded;
- the sink ceiling: the same rows (generated locally, same shape) written by the same Writer, not fetched;

and the peak RSS of the full extraction at two row counts (it must not grow with the row count).
Every measurement runs in its own child process (so each peak RSS is its own) against its own fresh
BigQuery emulator (time-travel snapshots off, see _EMULATOR); the REST stand-ins run in further processes.

    .venv/bin/python bench/api_extractor.py [--rows 1000000] [--page-size 1000] [--batch-size 10000]
                                            [--small-rows 100000]

Uses BIGQUERY_EMULATOR_HOST when set, else starts a fresh emulator for each measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-token"  # noqa: S105 - a stand-in's test credential


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _settings(project: str) -> Any:
    from convergence.settings.model import load_settings

    return load_settings(environment="local", gcp_project_id=project,
                         bigquery_emulator_host=os.environ["BIGQUERY_EMULATOR_HOST"])


def _services(project: str) -> Any:
    from convergence.runtime.services import Services

    class BenchServices(Services):
        pass

    return BenchServices(_settings(project))


def _step(url: str, page_size: int, batch_size: int) -> dict[str, Any]:
    return {"step_id": "extract_records", "ps_type": "generic.api_extractor", "config": {
        "url": f"{url}/v1/cursor/records", "auth": {"type": "bearer", "secret_key": "token"},
        "pagination": {"type": "cursor", "param": "after", "response_path": "meta.next_cursor", "limit": page_size},
        "data_path": "data", "max_pages": 10_000_000,
        "destination": {"table": "bench_records_raw", "batch_size": batch_size}}}


# -- the three measurements (each in a child process) --------------------------------------------------------


async def _full(url: str, rows: int, page_size: int, batch_size: int, project: str) -> dict[str, Any]:
    from convergence.pipeline import Executor, PipelineConfig, RunContext

    services = _services(project)
    config = PipelineConfig(pipeline_id="bench-api-extractor", name="bench", steps=[_step(url, page_size, batch_size)])
    org = f"bench{uuid.uuid4().hex[:8]}"
    context = RunContext(org_slug=org, run_id=f"run_{uuid.uuid4().hex[:8]}", pipeline_id=config.pipeline_id,
                         secrets={"token": TOKEN}, services=services)
    start = time.perf_counter()
    result = await Executor(classifiers=services.error_classifiers).run(config, context)
    seconds = time.perf_counter() - start
    await services.aclose()
    if result.status.value != "SUCCESS":
        raise SystemExit(f"extraction failed: {result.error}")
    step = result.steps[0]
    table = f"`{services.bigquery.project}.{services.org_dataset(org)}.bench_records_raw`"
    loaded = next(iter(services.bigquery.query(f"SELECT COUNT(*) FROM {table}").result()))[0]  # noqa: S608
    return {"rows": step.rows_processed, "loaded": int(loaded), "seconds": seconds,
            "pages": step.result["pages"], "batches": step.result["batches"],
            "max_rows_in_memory": step.result["max_rows_in_memory"]}


async def _fetch(url: str, rows: int, page_size: int, batch_size: int, project: str) -> dict[str, Any]:
    from convergence.extractors import BearerAuth, CursorPaginator, PageRequest, iter_pages

    services = _services(project)
    http = services.http("bench")
    count = pages = 0
    start = time.perf_counter()
    paginator = CursorPaginator(param="after", response_path="meta.next_cursor", limit_param="limit", limit=page_size)
    async for page in iter_pages(http, PageRequest("GET", f"{url}/v1/cursor/records"), BearerAuth(TOKEN), paginator,
                                 "data", max_pages=10_000_000):
        count += len(page.rows)
        pages += 1
    seconds = time.perf_counter() - start
    await services.aclose()
    return {"rows": count, "seconds": seconds, "pages": pages}


async def _load(url: str, rows: int, page_size: int, batch_size: int, project: str) -> dict[str, Any]:
    """The sink alone: the rows the extractor would write (same shaping, same Writer, same batches, same
    overlap of writing with preparing the next batch), generated locally instead of fetched."""
    from convergence.devstack.providers.rest_server import record
    from convergence.extractors import BatchBuffer
    from convergence.pipeline import RunContext
    from convergence.processors.generic._sink import TableSink

    services = _services(project)
    org = f"bench{uuid.uuid4().hex[:8]}"
    context = RunContext(org_slug=org, run_id=f"run_{uuid.uuid4().hex[:8]}", pipeline_id="bench",
                         services=services)
    sink = TableSink(services, context, "extract_records", table="bench_records_raw", schema_file=None,
                     mode="append", source_url=f"{url}/v1/cursor/records", batch_size=batch_size)
    start = time.perf_counter()
    async with sink.open_write() as write:  # same batching, overlap and one write per step as the extractor
        buffer = BatchBuffer(batch_size, write.send)
        for page, offset in enumerate(range(0, rows, page_size), start=1):
            await buffer.add(sink.shape([record(i) for i in range(offset, min(offset + page_size, rows))], page))
        await buffer.flush()
        await write.finish()
    seconds = time.perf_counter() - start
    await services.aclose()
    written, batch = write.rows_written, buffer.batches
    return {"rows": written, "seconds": seconds, "batches": batch}


def worker(args: argparse.Namespace) -> None:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    measure = {"full": _full, "fetch": _fetch, "load": _load}[args.worker]
    result = asyncio.run(measure(args.url, args.rows, args.page_size, args.batch_size, args.project))
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    print(json.dumps(result))  # noqa: T201 - read by the parent


# -- orchestration -----------------------------------------------------------------------------------------


def _start_server(rows: int, page_size: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "convergence.devstack.providers.rest_server",
         "--total", str(rows), "--page-size", str(page_size), "--auth", "bearer", "--secret", TOKEN],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


# bqemulator copies the whole table into a time-travel snapshot after every write (versioning/snapshots.py,
# `SnapshotManager.capture`: CREATE TABLE snapshot AS SELECT * FROM table), so loading 1M rows in 100 jobs
# costs ~50M row copies and grows the emulator past 20 GB (it was OOM-killed). The benchmark does not use
# time travel: its emulator runs with that capture turned off, so the sink ceiling is the load path itself.
_EMULATOR = """
import sys
from convergence.devstack.bqemulator_launcher import build_settings, patch_engine, run_forever
from bqemulator.versioning.snapshots import SnapshotManager
SnapshotManager.capture = lambda self, *args, **kwargs: None
patch_engine()
run_forever(build_settings(int(sys.argv[1]), sys.argv[2], None))
"""


def _start_emulator(project: str) -> tuple[subprocess.Popen[bytes], str]:
    import urllib.request

    from convergence.devstack.ports import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", _EMULATOR, str(port), project], cwd=ROOT,  # noqa: S603
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}/bigquery/v2/projects/{project}/datasets"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - fixed loopback URL
                return process, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("the BigQuery emulator did not start")


def _child(kind: str, url: str, rows: int, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in its own process, against its own fresh emulator (unless BIGQUERY_EMULATOR_HOST is
    set): no measurement pays for the tables or jobs another one left in the emulator."""
    emulator = None
    env = dict(os.environ)
    if not env.get("BIGQUERY_EMULATOR_HOST"):
        emulator, host = _start_emulator(args.project)
        env["BIGQUERY_EMULATOR_HOST"] = host
    command = [sys.executable, __file__, "--worker", kind, "--url", url, "--rows", str(rows), "--page-size",
               str(args.page_size), "--batch-size", str(args.batch_size), "--project", args.project]
    try:
        output = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, env=env)  # noqa: S603
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait(20)
    if output.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small-rows", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--project", default="convergence-local")
    parser.add_argument("--worker", choices=["full", "fetch", "load"])
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    servers = []
    try:
        big, big_url = _start_server(args.rows, args.page_size)
        small, small_url = _start_server(args.small_rows, args.page_size)
        servers += [big, small]
        fetch = _child("fetch", big_url, args.rows, args)
        load = _child("load", big_url, args.rows, args)
        full = _child("full", big_url, args.rows, args)
        full_small = _child("full", small_url, args.small_rows, args)
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)

    assert full["rows"] == full["loaded"] == args.rows, full
    rate = {name: m["rows"] / m["seconds"] for name, m in (("fetch", fetch), ("load", load), ("full", full))}
    serial = 1 / (1 / rate["fetch"] + 1 / rate["load"])  # what fetch-then-load with no overlap would give
    print(f"rows {args.rows:,} over {full['pages']:,} pages of {args.page_size}, batches of {args.batch_size} "
          f"({full['batches']} batches into one write per step; at most {full['max_rows_in_memory']:,} rows in memory)")
    print(f"  source ceiling (fetch only): {rate['fetch']:>10,.0f} rows/s  ({fetch['seconds']:.1f} s, "
          f"peak RSS {fetch['peak_rss_mb']} MB)")
    print(f"  sink ceiling (load only):    {rate['load']:>10,.0f} rows/s  ({load['seconds']:.1f} s, "
          f"peak RSS {load['peak_rss_mb']} MB)")
    print(f"  full extraction:             {rate['full']:>10,.0f} rows/s  ({full['seconds']:.1f} s, "
          f"peak RSS {full['peak_rss_mb']} MB)")
    print(f"  full / min(ceilings) = {rate['full'] / min(rate['fetch'], rate['load']):.2f}; "
          f"full / no-overlap serial = {rate['full'] / serial:.2f}")
    print(f"  peak RSS of the full extraction: {full_small['peak_rss_mb']} MB at {args.small_rows:,} rows, "
          f"{full['peak_rss_mb']} MB at {args.rows:,} rows "
          f"(x{full['peak_rss_mb'] / full_small['peak_rss_mb']:.2f} for x{args.rows / args.small_rows:.0f} rows)")


if __name__ == "__main__":
    main()
