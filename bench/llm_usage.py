"""Benchmark of the LLM usage pipelines.

1. Extraction of D days x M models x hourly buckets from the OpenAI stand-in (a separate process) into
   BigQuery (the emulator), against fetching the same pages without loading them, in the same run.
2. Peak RSS of the extraction as the range doubles (each range in its own child process).
3. The cost SQL (openai.cost) over 1M raw rows: time, and the query jobs it takes.

    .venv/bin/python bench/llm_usage.py [--days 30] [--models 50] [--cost-rows 1000000]
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
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from convergence.devstack.bigquery_emulator import BigQueryEmulator, anonymous_bigquery_client  # noqa: E402
from convergence.devstack.providers.openai_server import ADMIN_KEY  # noqa: E402
from convergence.pipeline import RunContext, StepConfig  # noqa: E402

START = date(2026, 1, 1)
GROUP_BY = ["model"]


def start_server(models: int) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "convergence.devstack.providers.openai_server", "--models", str(models), "--seed", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    return process, url


def services_for(endpoint: str, project: str, openai_url: str) -> Any:
    from convergence.runtime.services import Services
    from convergence.settings.model import load_settings
    from convergence.warehouse.writer import Writer

    settings = load_settings(environment="local", gcp_project_id=project, openai_base_url=openai_url)
    client = anonymous_bigquery_client(endpoint, project)
    services = Services(settings)
    services.__dict__["bigquery"] = client
    services.__dict__["writer"] = Writer(client, settings)
    services.__dict__["credentials"] = SimpleNamespace(get=lambda org, provider: ADMIN_KEY)
    services.org_dataset = settings.org_dataset  # type: ignore[method-assign]
    return services


def new_org(services: Any) -> str:
    org = f"bench_{uuid.uuid4().hex[:8]}"
    services.bigquery.create_dataset(f"{services.bigquery.project}.{services.settings.org_dataset(org)}")
    return org


def usage_step(days: int, **extra: Any) -> tuple[StepConfig, dict[str, str]]:
    config = {"endpoints": ["completions"], "bucket_width": "1h", "group_by": GROUP_BY, "max_range_days": 400,
              **extra}
    end = START + timedelta(days=days - 1)
    return (StepConfig(step_id="extract_usage", ps_type="openai.usage", config=config),
            {"start_date": START.isoformat(), "end_date": end.isoformat()})


async def extract(services: Any, org: str, days: int) -> dict[str, Any]:
    from convergence.processors.openai.usage import OpenAIUsage

    step, params = usage_step(days)
    context = RunContext(org_slug=org, run_id=f"bench_{days}", pipeline_id="bench", parameters=params,
                         secrets={"openai": ADMIN_KEY}, services=services)
    clock = time.perf_counter()
    try:
        result = await OpenAIUsage().execute(step, context)
    finally:
        await services.aclose()
    return {**result, "seconds": time.perf_counter() - clock}


async def fetch_only(services: Any, days: int) -> dict[str, Any]:
    """The same requests and pages, JSON decoded and results counted, nothing validated or loaded."""
    from convergence.processors._llm.client import pages
    from convergence.processors._llm.params import date_range
    from convergence.processors.openai.usage import OpenAIUsage

    step, params = usage_step(days)
    dates = date_range(step.config, params)
    http = services.http("openai")
    rows = 0
    clock = time.perf_counter()
    try:
        for request in OpenAIUsage().requests(services.settings.openai_base_url, ADMIN_KEY, step.config, dates):
            async for _, body in pages(http, request.url, request.params, request.headers, "openai"):
                rows += sum(len(bucket["results"]) for bucket in body["data"])
    finally:
        await services.aclose()
    return {"rows": rows, "seconds": time.perf_counter() - clock, "pages": http.calls}


def child_extract(args: argparse.Namespace) -> None:
    services = services_for(args.bq_endpoint, args.project, args.openai_url)
    org = new_org(services)
    result = asyncio.run(extract(services, org, args.days))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"days": args.days, "rows": result["rows_processed"], "seconds": result["seconds"],
                      "pages": result["pages"], "peak_rss_mb": round(peak_kb / 1024, 1)}))


def rss_series(emulator: BigQueryEmulator, url: str, day_counts: list[int]) -> list[dict[str, Any]]:
    out = []
    for days in day_counts:
        line = subprocess.run(  # noqa: S603 - this script, fixed arguments
            [sys.executable, __file__, "--child-extract", "--days", str(days), "--bq-endpoint", emulator.endpoint,
             "--project", emulator.project, "--openai-url", url],
            cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        out.append(json.loads(line))
    return out


RAW_INSERT = """INSERT INTO `{table}` (org_slug, usage_date, bucket_start, bucket_end, bucket_width, endpoint,
  project_id, user_id, api_key_id, model, model_base, batch, service_tier, input_tokens, input_cached_tokens,
  input_cache_write_tokens, input_uncached_tokens, output_tokens, input_audio_tokens, output_audio_tokens,
  num_model_requests, run_id, ingested_at)
SELECT @org, DATE_ADD(@start, INTERVAL MOD(n, 30) DAY), TIMESTAMP '2026-01-01 00:00:00+00',
  TIMESTAMP '2026-01-01 01:00:00+00', '1h', 'completions', CONCAT('proj_', CAST(MOD(n, 7) AS STRING)), NULL, NULL,
  CONCAT(m, '-2025-04-14'), m, MOD(n, 5) = 0, 'default', 3000 + MOD(n, 977), 1000, 0, 2000 + MOD(n, 977),
  500 + MOD(n, 331), NULL, NULL, 3, 'bench', CURRENT_TIMESTAMP()
FROM UNNEST(GENERATE_ARRAY(1, {rows})) AS n
JOIN UNNEST(['gpt-4.1', 'gpt-4.1-mini', 'gpt-4.1-nano', 'gpt-4o', 'gpt-4o-mini']) AS m ON TRUE"""


async def cost_sql(services: Any, raw_rows: int) -> dict[str, Any]:
    """openai.cost over `raw_rows` raw rows generated in the emulator; counts the query jobs it runs."""
    from google.cloud import bigquery

    from convergence.processors._llm.bq import Warehouse
    from convergence.processors._llm.calc import TableSpec
    from convergence.processors.openai.cost import OpenAICost
    from convergence.processors.openai.seed_csv import get_engine as seed_engine

    org = new_org(services)
    client = services.bigquery
    warehouse = Warehouse(services, org)
    raw = TableSpec(None, "openai_usage_daily_raw", "configs/openai/cost/schemas/openai_usage_daily_raw.json",
                    "usage_date", ["model"])
    await raw.ensure(warehouse)
    client.query(RAW_INSERT.format(table=warehouse.table_id(raw.table), rows=raw_rows // 5),
                 job_config=bigquery.QueryJobConfig(query_parameters=[
                     bigquery.ScalarQueryParameter("org", "STRING", org),
                     bigquery.ScalarQueryParameter("start", "DATE", START)])).result()
    context = RunContext(org_slug=org, run_id="bench_cost", pipeline_id="bench", services=services,
                         parameters={"start_date": START.isoformat(),
                                     "end_date": (START + timedelta(days=29)).isoformat()})
    await seed_engine().execute(StepConfig(step_id="seed", ps_type="openai.seed_csv", config={
        "mode": "overwrite", "tables": [{"table": "openai_model_pricing",
                                         "csv_file": "configs/openai/seed/data/default_pricing.csv",
                                         "schema_file": "configs/openai/seed/schemas/openai_pricing.json"}]}),
        context)
    jobs: list[str] = []
    original = client.query

    def counting(sql: str, *args: Any, **kwargs: Any) -> Any:
        jobs.append(sql.lstrip().split(None, 1)[0].upper())
        return original(sql, *args, **kwargs)

    client.query = counting  # type: ignore[method-assign]
    clock = time.perf_counter()
    try:
        result = await OpenAICost().execute(StepConfig(step_id="cost", ps_type="openai.cost"), context)
    finally:
        client.query = original  # type: ignore[method-assign]
    seconds = time.perf_counter() - clock
    return {"raw_rows": raw_rows, "cost_rows": result["rows_processed"], "seconds": seconds,
            "query_jobs": jobs, "total_cost_usd": result["total_cost_usd"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--cost-rows", type=int, default=1_000_000)
    parser.add_argument("--child-extract", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bq-endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--project", default="convergence-local", help=argparse.SUPPRESS)
    parser.add_argument("--openai-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_extract:
        child_extract(args)
        return
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    server, url = start_server(args.models)
    emulator = BigQueryEmulator(project="convergence-local")
    emulator.start()
    try:
        services = services_for(emulator.endpoint, emulator.project, url)
        fetched = asyncio.run(fetch_only(services, args.days))
        services = services_for(emulator.endpoint, emulator.project, url)
        loaded = asyncio.run(extract(services, new_org(services), args.days))
        print(f"\n1. Extraction, {args.days} days x {args.models} models x hourly buckets "
              f"(group_by {GROUP_BY}), stand-in in its own process, BigQuery emulator:")
        print(f"   fetch only:         {fetched['rows']:>7} rows in {fetched['seconds']:6.2f} s "
              f"= {fetched['rows'] / fetched['seconds']:>8.0f} rows/s ({fetched['pages']} pages)")
        print(f"   fetch + load to BQ: {loaded['rows_processed']:>7} rows in {loaded['seconds']:6.2f} s "
              f"= {loaded['rows_processed'] / loaded['seconds']:>8.0f} rows/s ({loaded['pages']} pages, "
              f"{loaded['batches']} batches) -> {fetched['seconds'] / loaded['seconds']:.0%} of fetch-only speed")
        series = rss_series(emulator, url, [args.days // 2, args.days, args.days * 2, args.days * 4])
        print("\n2. Peak RSS of the extraction process as the range doubles:")
        for item in series:
            print(f"   {item['days']:>3} days: {item['rows']:>7} rows, {item['pages']:>3} pages, "
                  f"{item['seconds']:6.2f} s, peak RSS {item['peak_rss_mb']:6.1f} MB")
        cost = asyncio.run(cost_sql(services_for(emulator.endpoint, emulator.project, url), args.cost_rows))
        print(f"\n3. Cost SQL (openai.cost) over {cost['raw_rows']:,} raw rows: {cost['seconds']:.2f} s, "
              f"{cost['cost_rows']} cost rows, total {cost['total_cost_usd']} USD")
        print(f"   query jobs: {cost['query_jobs']} (the cost itself is the single MERGE job; "
              "the SELECT is the summary of what it wrote)")
    finally:
        emulator.stop()
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
