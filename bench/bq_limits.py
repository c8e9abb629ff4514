"""BigQuery jobs and table operations of the hot path and the writer, counted through the client, against
BigQuery's per-table limits ("Quotas and limits" page: 2 mutating DML statements running and 20 queued per
table; 1,500 table modifications per table per day, load, copy and query jobs that write it).

1. Runs through the real RunHandler (admission, gate, run log, group commit; no-op pipeline) on the
   emulators, every BigQuery API request counted by kind: jobs.insert / jobs.query (query, DML, load),
   tabledata.insertAll; mutating DML by target table. Then the same handler idle for --idle seconds.
2. Writer.write of --rows rows (batches of --batch-size): load jobs and bytes per row, for append and for
   range_replace (staging table + one MERGE).
3. An extract step of --extract-rows raw rows through the extractor's sink (TableSink, BatchBuffer, the
   step's one write), against the sink as it was (one Writer.write per batch), in the same run.
4. Onboarding of --orgs orgs: half one at a time (onboard_org), half in one onboard_orgs call; table
   operations (DML INSERT, load jobs, mutating DML) per central table.
Figures derived from these (per process -> N processes, per run -> 10,000 orgs x 5 pipelines a day) are
printed with their formulas.

    .venv/bin/python bench/bq_limits.py [--runs 1000] [--orgs 20] [--concurrency 64] [--idle 10]
                                        [--rows 1000000] [--batch-size 10000] [--extract-rows 200000]
                                        [--write-results]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_DML = re.compile(r"^\s*(MERGE|UPDATE|DELETE)\s+(?:INTO\s+|FROM\s+)?`?([\w.-]+)`?", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT\s+(?:INTO\s+)?`?([\w.-]+)`?", re.IGNORECASE)
SEEDED = ("org_api_keys", "org_subscriptions", "org_usage_quotas", "org_kms_keys", "org_profiles")
TABLE_MODIFICATIONS_PER_DAY = 1500  # per table ("Quotas and limits": table modifications per table per day)
MUTATING_DML_RUNNING = 2  # per table, running at once; 20 more queue
MUTATING_DML_QUEUED = 20


class Counts:
    """Every API request a client makes, by kind, and mutating DML / load jobs by target table."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.dml_by_table: Counter[str] = Counter()
        self.loads_by_table: Counter[str] = Counter()
        self.inserts_by_table: Counter[str] = Counter()  # DML INSERT (a table modification, not mutating DML)

    def jobs(self) -> int:
        return self.requests["jobs.insert"] + self.requests["jobs.query"]

    def snapshot(self) -> dict[str, Any]:
        return {"requests": Counter(self.requests), "dml": Counter(self.dml_by_table),
                "loads": Counter(self.loads_by_table), "inserts": Counter(self.inserts_by_table)}


def counted(client: Any, counts: Counts) -> Any:
    """Wrap this client instance's own request method (every REST call goes through it) and its file
    upload (load jobs by resumable upload do not)."""
    call_api = client._call_api  # noqa: SLF001 - the client's single request path
    load = client.load_table_from_file

    def call(retry: Any, *args: Any, **kwargs: Any) -> Any:
        method, path = kwargs.get("method", "GET"), kwargs.get("path", "")
        data = kwargs.get("data") or {}
        if method == "POST" and path.endswith("/jobs"):
            counts.requests["jobs.insert"] += 1
            sql = ((data.get("configuration") or {}).get("query") or {}).get("query") or ""
        elif method == "POST" and path.endswith("/queries"):
            counts.requests["jobs.query"] += 1
            sql = data.get("query") or ""
        else:
            kind = "tabledata.insertAll" if path.endswith("/insertAll") else f"{method} other"
            counts.requests[kind] += 1
            sql = ""
        match = _DML.match(sql)
        if match:
            counts.dml_by_table[match.group(2).split(".")[-1]] += 1
        insert = _INSERT.match(sql)
        if insert:
            counts.inserts_by_table[insert.group(1).split(".")[-1]] += 1
        return call_api(retry, *args, **kwargs)

    def load_file(file: Any, destination: Any, *args: Any, **kwargs: Any) -> Any:
        counts.requests["jobs.insert"] += 1  # the upload creates one load job
        counts.loads_by_table[str(destination).split(".")[-1]] += 1
        return load(file, destination, *args, **kwargs)

    client._call_api = call  # noqa: SLF001
    client.load_table_from_file = load_file
    return client


def diff(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Counter[str]]:
    return {key: after[key] - before[key] for key in after}


# -- 1. the hot path ---------------------------------------------------------------------------------------


async def hot_path(services: Any, counts: Counts, runs: int, orgs: list[str], concurrency: int,
                   idle: float) -> dict[str, Any]:
    from convergence.consumer.handler import RunHandler
    from convergence.pipeline import PipelineLoader
    from convergence.schemas import RunRequest

    handler = RunHandler(services=services, loader=PipelineLoader(services.settings.configs_dir))
    requests = [RunRequest.create(orgs[i % len(orgs)], "utility/smoke/noop", {}) for i in range(runs)]
    gate = asyncio.Semaphore(concurrency)

    async def one(req: Any) -> str:
        async with gate:
            outcome = await handler.handle(req.to_json(), req.attributes(), f"m-{req.run_id}", 1)
            return outcome.kind.value

    before = counts.snapshot()
    start = time.perf_counter()
    outcomes = Counter(await asyncio.gather(*(one(r) for r in requests)))
    busy_seconds = time.perf_counter() - start
    loaded = diff(counts.snapshot(), before)
    before = counts.snapshot()
    await asyncio.sleep(idle)  # the same handler, no messages
    idle_counts = diff(counts.snapshot(), before)
    await handler.aclose()
    return {"outcomes": outcomes, "busy_seconds": busy_seconds, "load": loaded, "idle": idle_counts,
            "admission": dict(handler.admission.calls)}


# -- 2. the writer -----------------------------------------------------------------------------------------

SCHEMA = [{"name": "org_slug", "type": "STRING", "mode": "REQUIRED"},
          {"name": "usage_date", "type": "DATE", "mode": "REQUIRED"},
          {"name": "model", "type": "STRING"}, {"name": "line_item", "type": "STRING"},
          {"name": "input_tokens", "type": "INT64"}, {"name": "output_tokens", "type": "INT64"},
          {"name": "cost_usd", "type": "NUMERIC"}, {"name": "extracted_at", "type": "TIMESTAMP"}]


def write_rows(org: str, n: int):
    stamp = datetime(2026, 1, 16, tzinfo=UTC).isoformat()
    for i in range(n):
        yield {"org_slug": org, "usage_date": date(2026, 1, 15), "model": f"model-{i % 7}",
               "line_item": f"item-{i}", "input_tokens": i, "output_tokens": 2 * i, "cost_usd": "0.000125",
               "extracted_at": stamp}


def writer_figures(services: Any, counts: Counts, org: str, rows: int, batch_size: int,
                   schema_file: Path) -> list[dict[str, Any]]:
    from convergence.warehouse.writer import Writer

    writer = Writer(services.bigquery, services.settings, batch_size=batch_size)
    dataset = services.org_dataset(org)
    out = []
    for mode, n, extra in [("append", rows, {}),
                           ("range_replace", max(rows // 10, batch_size * 2),
                            {"date_column": "usage_date", "date_range": (date(2026, 1, 15), date(2026, 1, 15))})]:
        before = counts.snapshot()
        start = time.perf_counter()
        result = writer.write(dataset, f"bench_{mode}", write_rows(org, n), mode=mode, org_slug=org,
                              schema_path=schema_file, **extra)
        seconds = time.perf_counter() - start
        spent = diff(counts.snapshot(), before)
        target = f"bench_{mode}"
        out.append({"mode": mode, "rows": result.rows_written, "batches": result.batches,
                    "load_jobs": result.load_jobs, "jobs": spent["requests"]["jobs.insert"] +
                    spent["requests"]["jobs.query"], "target_loads": spent["loads"][target],
                    "target_dml": spent["dml"][target], "seconds": seconds})
    return out


# -- 3. the extractor's sink -------------------------------------------------------------------------------


async def extract_figures(services: Any, counts: Counts, org: str, rows: int, batch_size: int,
                          page_size: int = 1000) -> list[dict[str, Any]]:
    """The same shaped raw rows (pages of `page_size`) into the ELT table, through the extractor's sink
    and batching: as it was (one Writer.write per batch, the baseline) and as it is (one write per step)."""
    import uuid

    from convergence.devstack.providers.rest_server import record
    from convergence.extractors import BatchBuffer
    from convergence.pipeline import RunContext
    from convergence.processors.generic._sink import TableSink
    from convergence.warehouse.writer import _dumps

    out = []
    for design, table in (("per batch (before)", "bench_extract_per_batch"), ("one write per step", "bench_extract")):
        context = RunContext(org_slug=org, run_id=f"run_{uuid.uuid4().hex[:8]}", pipeline_id="bench",
                             services=services)
        sink = TableSink(services, context, "extract_records", table=table, schema_file=None, mode="append",
                         source_url="bench://records", batch_size=batch_size)
        before = counts.snapshot()
        start = time.perf_counter()
        if design.startswith("per batch"):
            async def per_batch(batch: list[dict[str, Any]], index: int, sink: Any = sink) -> None:
                await asyncio.to_thread(sink.writer.write, sink.dataset, sink.table, batch,
                                        **sink.writer_options("append"))

            buffer = BatchBuffer(batch_size, per_batch)
            for page, offset in enumerate(range(0, rows, page_size), start=1):
                await buffer.add(sink.shape([record(i) for i in range(offset, min(offset + page_size, rows))], page))
            await buffer.flush()
            written = buffer.written
        else:
            async with sink.open_write() as write:
                buffer = BatchBuffer(batch_size, write.send)
                for page, offset in enumerate(range(0, rows, page_size), start=1):
                    await buffer.add(sink.shape([record(i) for i in range(offset, min(offset + page_size, rows))],
                                                page))
                await buffer.flush()
                await write.finish()
            written = write.rows_written
        seconds = time.perf_counter() - start
        spent = diff(counts.snapshot(), before)
        sample = sink.shape([record(i) for i in range(1000)])
        out.append({"design": design, "rows": written, "batches": buffer.batches, "peak": buffer.peak,
                    "row_bytes": sum(len(_dumps(r)) + 1 for r in sample) / len(sample),
                    "target_loads": spent["loads"][table], "target_dml": spent["dml"][table],
                    "jobs": spent["requests"]["jobs.insert"] + spent["requests"]["jobs.query"], "seconds": seconds})
    return out


# -- 4. onboarding -----------------------------------------------------------------------------------------


def onboarding_figures(services: Any, counts: Counts, one_by_one: list[str], bulk: list[str]) -> list[dict[str, Any]]:
    from convergence.tenancy.onboarding import OrgSpec, onboard_org, onboard_orgs

    out = []
    for design, orgs in (("one at a time (onboard_org)", one_by_one), ("one call (onboard_orgs)", bulk)):
        before = counts.snapshot()
        start = time.perf_counter()
        if design.startswith("one at a time"):
            for org in orgs:
                onboard_org(services.bigquery, services.settings, services.cipher, org, "SCALE")
        else:
            onboard_orgs(services.bigquery, services.settings, services.cipher, [OrgSpec(org, "SCALE") for org in orgs])
        seconds = time.perf_counter() - start
        spent = diff(counts.snapshot(), before)
        ops = {t: spent["inserts"][t] + spent["loads"][t] + spent["dml"][t] for t in SEEDED}
        out.append({"design": design, "orgs": len(orgs), "ops": ops, "calls": len(orgs) if "one at" in design else 1,
                    "inserts": sum(spent["inserts"][t] for t in SEEDED),
                    "loads": sum(spent["loads"][t] for t in SEEDED),
                    "mutating_dml": sum(spent["dml"][t] for t in SEEDED), "seconds": seconds})
    return out


def bytes_per_row(n: int = 1000) -> float:
    from convergence.warehouse.writer import _dumps

    return sum(len(_dumps(r)) + 1 for r in write_rows("acme", n)) / n


# -- orchestration -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--orgs", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--single-runs", type=int, default=100)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--extract-rows", type=int, default=200_000)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()

    import json
    import logging
    import uuid

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from convergence.devstack.stack import LocalStack
    from convergence.infra.apply import apply
    from convergence.infra.topology import Topology
    from convergence.runtime.services import Services
    from convergence.settings import reset_settings
    from convergence.settings.model import load_settings
    from convergence.warehouse.bootstrap import bootstrap
    from convergence.warehouse.writer import SPOOL_BYTES

    counts = Counts()

    class CountedServices(Services):
        @property
        def bigquery(self) -> Any:  # one counted client for everything the services do
            if "_counted" not in self.__dict__:
                self.__dict__["_counted"] = counted(super().bigquery, counts)
            return self.__dict__["_counted"]

    stack = LocalStack().start()
    stack.apply_env()
    reset_settings()
    tmp = Path(tempfile.mkdtemp(prefix="bq_limits_"))
    try:
        settings = load_settings(environment="development", gcp_project_id=stack.project,
                                 bigquery_emulator_host=stack.bigquery.host, pubsub_emulator_host=stack.pubsub.host,
                                 central_dataset=f"organizations_{uuid.uuid4().hex[:6]}",
                                 local_keyring_path=tmp / "keyring.key")
        services = CountedServices(settings)
        assert bootstrap(services.bigquery, settings).ok
        apply(Topology.from_settings(settings), settings)
        orgs = [f"bench{uuid.uuid4().hex[:6]}" for _ in range(args.orgs)]
        onboarding = onboarding_figures(services, counts, orgs[: args.orgs // 2], orgs[args.orgs // 2:])
        hot = asyncio.run(hot_path(services, counts, args.runs, orgs, args.concurrency, args.idle))
        # A quiet hour: runs arrive one at a time, nothing to share a query with (gate cache still warm).
        single = asyncio.run(hot_path(services, counts, args.single_runs, orgs, 1, 0))
        hot["single"] = single
        schema_file = tmp / "schema.json"
        schema_file.write_text(json.dumps(SCHEMA))
        writes = writer_figures(services, counts, orgs[0], args.rows, args.batch_size, schema_file)
        extracts = asyncio.run(extract_figures(services, counts, orgs[1], args.extract_rows, args.batch_size))
        services.close()
    finally:
        stack.stop()

    report = render(args, hot, writes, extracts, onboarding, bytes_per_row(), SPOOL_BYTES, settings.central_dataset)
    print(report)  # noqa: T201
    if args.write_results:
        from bench.results_file import write_section

        write_section("## BigQuery jobs and per-table limits (bench/bq_limits.py)", "<!-- bq_limits:start -->",
                      "<!-- bq_limits:end -->", report)


def render(args: argparse.Namespace, hot: dict[str, Any], writes: list[dict[str, Any]],
           extracts: list[dict[str, Any]], onboarding: list[dict[str, Any]], row_bytes: float,
           spool_bytes: int, central: str) -> str:
    load, idle = hot["load"], hot["idle"]
    runs = sum(hot["outcomes"].values())
    jobs = load["requests"]["jobs.insert"] + load["requests"]["jobs.query"]
    inserts = load["requests"]["tabledata.insertAll"]
    minutes = hot["busy_seconds"] / 60
    dml = sum(load["dml"].values())
    dml_tables = dict(load["dml"]) or "none"
    idle_jobs = idle["requests"]["jobs.insert"] + idle["requests"]["jobs.query"]
    single = hot["single"]
    single_jobs = single["load"]["requests"]["jobs.insert"] + single["load"]["requests"]["jobs.query"]
    per_process_dml_min = dml / minutes
    lines = [
        f"Command: `.venv/bin/python bench/bq_limits.py --runs {args.runs} --orgs {args.orgs} --concurrency "
        f"{args.concurrency} --idle {args.idle:g} --single-runs {args.single_runs} --rows {args.rows} "
        f"--batch-size {args.batch_size} --extract-rows {args.extract_rows}` "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, 2 cores shared). Every BigQuery REST request counted by "
        "wrapping the client's request method (`_call_api`) and its file upload (`load_table_from_file`).",
        "",
        "```",
        f"1. hot path: {runs} runs through RunHandler (no-op pipeline, {args.orgs} orgs, {args.concurrency} at once, "
        f"one process) in {hot['busy_seconds']:.1f} s; outcomes {dict(hot['outcomes'])}",
        f"   jobs (jobs.insert + jobs.query) J = {jobs}; tabledata.insertAll I = {inserts}; "
        f"admission calls {hot['admission']}",
        f"   mutating DML (MERGE/UPDATE/DELETE) D = {dml} (by table: {dml_tables})",
        f"   jobs per run under load = J / runs = {jobs} / {runs} = {jobs / runs:.3f}",
        f"   insertAll per run = I / runs = {inserts} / {runs} = {inserts / runs:.3f} (streaming: not a job, "
        "not a table modification)",
        f"   one at a time ({sum(single['outcomes'].values())} runs, concurrency 1): jobs per run = "
        f"{single_jobs} / {sum(single['outcomes'].values())} = {single_jobs / sum(single['outcomes'].values()):.3f}, "
        f"mutating DML {sum(single['load']['dml'].values())}; admission calls {single['admission']}",
        f"   idle {args.idle:g} s after the runs, same handler: {idle_jobs} jobs, "
        f"{idle['requests']['tabledata.insertAll']} insertAll -> jobs per idle minute = "
        f"{idle_jobs} / {args.idle / 60:.3f} = {idle_jobs / (args.idle / 60):.1f}",
        "",
        f"2. mutating DML per central table per minute, P consumer processes = P x D / busy minutes "
        f"(D = {dml} in {minutes:.3f} min):",
    ]
    for p in (1, 4, 16):
        lines.append(f"   P = {p:>2}: {p} x {dml} / {minutes:.3f} = {p * per_process_dml_min:.1f} per minute "
                     f"(limit: {MUTATING_DML_RUNNING} running + {MUTATING_DML_QUEUED} queued at once)")
    lines += [
        "   removed design (one counter MERGE per process per second while runs arrive): "
        "P x 60 = 60 / 240 / 960 per minute on org_usage_quotas",
        "   plus the reporting job OrgGate.refresh_usage, run by the one process that handles a scheduler tick: "
        "one MERGE per tick (hourly ticks: 1 / 60 = 0.02 per minute), whatever P",
        "",
    ]
    append = next(w for w in writes if w["mode"] == "append")
    staged = next(w for w in writes if w["mode"] == "range_replace")
    lines += [
        "3. writer (Writer.write, one call per write):",
    ]
    for w in writes:
        lines.append(f"   {w['mode']:<13} {w['rows']:>9,} rows in {w['batches']} batches of {args.batch_size:,}: "
                     f"{w['load_jobs']} load job(s), {w['jobs']} jobs in all, on the target table "
                     f"{w['target_loads']} load + {w['target_dml']} DML ({w['rows'] / w['seconds']:,.0f} rows/s)")
    per_million = append["load_jobs"] * 1_000_000 / append["rows"]
    lines += [
        f"   jobs per 1M rows written (writes of {append['rows']:,} rows) = load jobs x 1M / rows = "
        f"{append['load_jobs']} x 1,000,000 / "
        f"{append['rows']:,} = {per_million:.1f} (before: one per batch = 1M / {args.batch_size:,} = "
        f"{1_000_000 / args.batch_size:.0f})",
        f"   bound: ceil(rows x bytes/row / spool_bytes) = ceil(1,000,000 x {row_bytes:.0f} / {spool_bytes:,}) = "
        f"{math.ceil(1_000_000 * row_bytes / spool_bytes)} job(s) per 1M rows of this shape",
        "",
    ]
    base, step = extracts[0], extracts[1]
    lines += [
        f"4. extract step (TableSink + BatchBuffer, raw ELT rows, pages of 1,000, batches of {args.batch_size:,}), "
        "baseline = the sink as it was, same run:",
    ]
    for e in extracts:
        lines.append(f"   {e['design']:<19} {e['rows']:>9,} rows, {e['batches']} batches: {e['target_loads']} load "
                     f"job(s) + {e['target_dml']} DML on the table, {e['jobs']} jobs in all, at most "
                     f"{e['peak']:,} rows held ({e['rows'] / e['seconds']:,.0f} rows/s)")
    raw_bytes = step["row_bytes"]
    lines += [
        f"   load jobs into the table for this {step['rows']:,}-row step: baseline {base['target_loads']}, now "
        f"{step['target_loads']} (ratio {step['target_loads'] / base['target_loads']:.3f}); a 1M-row step: baseline "
        f"ceil(1M / {args.batch_size:,}) = {math.ceil(1_000_000 / args.batch_size)}, now 1 + floor(1M x "
        f"{raw_bytes:.0f} bytes/row / {spool_bytes:,}) = {1 + int(1_000_000 * raw_bytes // spool_bytes)}",
        f"   rows/s now / baseline = {step['rows'] / step['seconds']:,.0f} / {base['rows'] / base['seconds']:,.0f} = "
        f"{(step['rows'] / step['seconds']) / (base['rows'] / base['seconds']):.2f}",
        "",
    ]
    one, bulk = onboarding[0], onboarding[1]
    one_per_org = max(one["ops"].values()) / one["orgs"]
    bulk_per_call = max(bulk["ops"].values())
    lines += ["5. onboarding, table operations per central table (DML INSERT + load jobs + mutating DML):"]
    for o in onboarding:
        lines.append(f"   {o['design']:<28} {o['orgs']:>3} orgs in {o['calls']} call(s): {o['inserts']} DML INSERT, "
                     f"{o['loads']} load jobs, {o['mutating_dml']} mutating DML on the 5 seed tables; per table "
                     f"{dict(o['ops'])} ({o['seconds'] / o['orgs'] * 1000:.0f} ms per org)")
    lines += [
        f"   per table: one at a time {max(one['ops'].values())} / {one['orgs']} orgs = {one_per_org:.1f} per org; "
        f"one call {bulk_per_call} for {bulk['orgs']} orgs "
        f"(ratio per org {bulk_per_call / bulk['orgs'] / one_per_org:.3f})",
        "",
    ]
    runs_day = 10_000 * 5
    central_dml_day = dml / runs * runs_day
    target_ops = staged["target_loads"] + staged["target_dml"]
    lines += [
        "6. table operations per table per day, 10,000 orgs x 5 daily pipelines = 50,000 runs a day (limit "
        f"{TABLE_MODIFICATIONS_PER_DAY:,} per table):",
        f"   central run log ({central}.org_meta_pipeline_runs): DML/load jobs = D / runs x 50,000 = "
        f"{dml} / {runs} x 50,000 = {central_dml_day:.0f}; its rows go by insertAll "
        f"(I / runs x 50,000 = {inserts / runs * runs_day:,.0f} requests, streaming quota, not table modifications)",
        "   org_usage_quotas: refresh_usage once per tick + once more at the first tick of a day (the day before) "
        "= 24 + 1 = 25 a day with hourly ticks (96 + 1 = 97 with ticks every 15 min); the removed per-second "
        "MERGE could reach 86,400 a day per process",
        f"   an org's extract destination (append): 5 x target loads per step = 5 x {step['target_loads']} = "
        f"{5 * step['target_loads']} (+1 DELETE only on a redelivered run); baseline 5 x ceil(1M / "
        f"{args.batch_size:,}) = {5 * math.ceil(1_000_000 / args.batch_size)} for 1M-row steps",
        f"   an org's destination table by Writer.write, 5 writes a day: 5 x (target loads + target DML per write) = "
        f"5 x {target_ops} = {5 * target_ops} (range_replace; append: 5 x {append['target_loads']} = "
        f"{5 * append['target_loads']}); every destination table is per org: 10,000 orgs never share one",
        f"   central seed tables (org_profiles ...), 10,000 orgs onboarded in one day: one at a time = 10,000 x "
        f"{one_per_org:.0f} = {10_000 * one_per_org:,.0f} (over the limit); onboard_orgs in calls of <= 10,000 orgs = "
        f"ceil(10,000 / 10,000) x {bulk_per_call} = {bulk_per_call}; in general: onboarding calls per day",
        "```",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
