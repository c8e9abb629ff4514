"""Benchmark of the scheduler fan-out.

A tick due for 3 scheduled pipelines (two need an integration, one does not) fanned out for N orgs that are
all eligible (N x 3 run requests), on the embedded local stack: eligibility queries and the ledger on the
BigQuery emulator, requests to the Pub/Sub emulator. Compared, in the same run, with a bare batched
publisher (google-cloud-pubsub PublisherClient, same batch settings) publishing the same prepared messages
(bytes and attributes made beforehand) and waiting for every future. Then the same tick again (a
duplicate: nothing to publish, ledger lookups only).

    .venv/bin/python bench/fanout.py [--orgs 10000] [--no-write]

Figures go to stdout and to this benchmark's section of bench/RESULTS.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import results_file  # noqa: E402 - bench/results_file.py, next to this script

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION_START = "<!-- bench/fanout.py: start -->"
SECTION_END = "<!-- bench/fanout.py: end -->"
TITLE = "## Scheduler fan-out, 10,000 orgs x 3 pipelines (bench/fanout.py)"
TICK = datetime(2026, 3, 1, 5, 0, tzinfo=UTC)
PIPELINES = {
    "bench/daily/openai_usage.yml": ("OPENAI", "daily", "04:30"),
    "bench/daily/anthropic_usage.yml": ("ANTHROPIC", "daily", "04:40"),
    "bench/monthly.yml": (None, "monthly", "04:50"),
}
INSERT_CHUNK = 10_000


def write_configs(root: Path) -> Path:
    configs = root / "configs"
    shutil.copytree(ROOT / "configs" / "setup", configs / "setup")
    for name, (integration, kind, at) in PIPELINES.items():
        path = configs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f'pipeline_id: "{{org_slug}}-{path.stem}"', f"name: {path.stem}"]
        if integration:
            lines.append(f"integration: {integration}")
        parameters = '{month: "{month}"}' if kind == "monthly" else \
            '{start_date: "{yesterday}", end_date: "{yesterday}"}'
        lines += [f'schedule: {{type: {kind}, time: "{at}", day_of_month: 1, parameters: {parameters}}}',
                  "steps:", "  - {step_id: work, ps_type: utility.noop}"]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return configs


def seed_orgs(client: Any, settings: Any, orgs: list[str]) -> float:
    """Profiles, ACTIVE subscriptions and OPENAI + ANTHROPIC credentials for every org (streaming inserts)."""
    from convergence.warehouse.identifiers import table_id

    started = time.perf_counter()
    now = datetime.now(UTC).isoformat()
    project, dataset = client.project, settings.central_dataset
    tables = {
        "org_profiles": [{"org_slug": o, "status": "ACTIVE", "subscription_plan": "SCALE", "created_at": now,
                          "updated_at": now} for o in orgs],
        "org_subscriptions": [{"subscription_id": uuid.uuid4().hex, "org_slug": o, "plan_name": "SCALE",
                               "status": "ACTIVE", "created_at": now, "updated_at": now} for o in orgs],
        "org_integration_credentials": [
            {"credential_id": uuid.uuid4().hex, "org_slug": o, "provider": provider, "encrypted_credential": "x",
             "validation_status": "VALID", "is_active": True, "created_at": now, "updated_at": now}
            for o in orgs for provider in ("OPENAI", "ANTHROPIC")],
    }
    for table, rows in tables.items():
        for start in range(0, len(rows), INSERT_CHUNK):
            errors = client.insert_rows_json(table_id(project, dataset, table), rows[start:start + INSERT_CHUNK])
            if errors:
                raise RuntimeError(f"{table}: {errors[:2]}")
    return time.perf_counter() - started


def bare_publish(settings: Any, messages: list[tuple[bytes, dict[str, str]]]) -> float:
    """The baseline: a PublisherClient with the same batch settings, prepared messages, wait for all."""
    from convergence.infra.clients import close_publisher, publisher_client
    from convergence.publisher.requests import REQUEST_BATCH

    client = publisher_client(settings, batch_settings=REQUEST_BATCH)
    topic = settings.topic_path(settings.requests_topic)
    try:
        started = time.perf_counter()
        pending = [client.publish(topic, data, **attributes) for data, attributes in messages]
        done, not_done = futures.wait(pending, timeout=300)
        elapsed = time.perf_counter() - started
        failed = sum(1 for f in done if f.exception() is not None) + len(not_done)
        if failed:
            raise RuntimeError(f"baseline: {failed} messages not published")
        return elapsed
    finally:
        close_publisher(client)


def purge(settings: Any) -> None:
    """Drop what the subscription holds (the emulator keeps every message in memory)."""
    from google.pubsub_v1 import types

    from convergence.infra.clients import subscriber_client

    subscriber = subscriber_client(settings)
    try:
        subscriber.seek(request=types.SeekRequest(
            subscription=settings.subscription_path(settings.requests_subscription),
            time=datetime.now(UTC) + timedelta(seconds=1)))
    except Exception as error:  # noqa: BLE001 - the emulator may not implement seek: only memory grows
        print(f"(seek not available: {type(error).__name__})")
    finally:
        subscriber.close()


class MemoryLedger:
    """The ledger in memory: isolates the fan-out's own cost from the BigQuery emulator's."""

    def __init__(self) -> None:
        self.rows: set[str] = set()

    def already_published(self, run_ids: Any, since: Any = None) -> set[str]:
        return self.rows.intersection(run_ids)

    def record(self, requests: Any, slots: Any) -> None:
        self.rows.update(request.run_id for request in requests)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from convergence.devstack.stack import LocalStack
    from convergence.infra.apply import apply
    from convergence.infra.topology import Topology
    from convergence.observability.logging import configure_logging
    from convergence.pipeline import PipelineLoader
    from convergence.publisher.fanout import FanOutReport, TickFanOut
    from convergence.publisher.ledger import ExecutionLedger
    from convergence.publisher.requests import RequestPublisher
    from convergence.settings.model import load_settings
    from convergence.tenancy.eligibility import EligibleOrgs
    from convergence.warehouse.bootstrap import bootstrap
    from convergence.warehouse.client import make_client

    configure_logging("WARNING", "console")
    work = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    stack = LocalStack().start()
    try:
        suffix = uuid.uuid4().hex[:8]
        settings = load_settings(
            pubsub_emulator_host=stack.pubsub.host, bigquery_emulator_host=stack.bigquery.host,
            gcp_project_id=stack.project, environment="local", central_dataset=f"bench_{suffix}",
            configs_dir=write_configs(work), processor_packages=["convergence.processors", "tests.fake_processors"],
            requests_topic=f"bench-requests-{suffix}", requests_subscription=f"bench-requests-worker-{suffix}")
        client = make_client(settings)
        assert bootstrap(client, settings).ok
        apply(Topology.from_settings(settings), settings)
        orgs = [f"org_{n:06d}" for n in range(args.orgs)]
        seed_seconds = seed_orgs(client, settings, orgs)

        loader = PipelineLoader(settings.configs_dir)
        # The prepared messages: exactly what the fan-out publishes, serialized before the clock starts.
        probe = TickFanOut(loader, None, EligibleOrgs(client, settings), None)  # type: ignore[arg-type]
        prepared = [(r.to_json(), r.attributes()) for r, _ in probe.requests_for(TICK, FanOutReport(TICK))]
        warm = bare_publish(settings, prepared[:2000])  # channels, JIT of the emulator

        publisher = RequestPublisher(settings)
        eligible = EligibleOrgs(client, settings)
        ledger = ExecutionLedger(client, settings)
        fanout = TickFanOut(loader, publisher, eligible, ledger, chunk=args.chunk)
        # Interleaved, so both sides see the same (shared, noisy) machine: baseline, fan-out, baseline, ...
        # Each fan-out is a fresh tick (the 1st of another month, so the monthly pipeline is due too): new
        # run_ids, nothing in the ledger yet.
        baselines: list[float] = []
        fanouts: list[tuple[float, Any]] = []
        for day in range(args.repeat):
            baselines.append(bare_publish(settings, prepared))
            purge(settings)
            started = time.perf_counter()
            report = fanout.fan_out(TICK.replace(month=TICK.month + day))
            fanouts.append((time.perf_counter() - started, report))
            purge(settings)
            if report.published != len(prepared):
                raise RuntimeError(f"fan-out published {report.published} of {len(prepared)}")
        baselines.append(bare_publish(settings, prepared))
        purge(settings)
        calls = {"eligibility": eligible.calls // args.repeat, "ledger": ledger.calls // args.repeat}
        started = time.perf_counter()
        duplicate = fanout.fan_out(TICK)  # the first tick again: everything is in the ledger
        duplicate_seconds = time.perf_counter() - started
        in_memory = TickFanOut(loader, publisher, eligible, MemoryLedger(), chunk=args.chunk)
        started = time.perf_counter()
        memory_report = in_memory.fan_out(TICK)
        memory_seconds = time.perf_counter() - started
        publisher.close()
        if duplicate.published != 0:
            raise RuntimeError(f"the duplicate tick published {duplicate.published}")
        baseline = statistics.median(baselines)
        fan_seconds, report = sorted(fanouts, key=lambda item: item[0])[len(fanouts) // 2]  # the median run
        return {
            "orgs": args.orgs, "messages": len(prepared), "chunk": args.chunk, "seed_seconds": seed_seconds,
            "warm_seconds": warm, "baselines": baselines, "baseline": baseline, "fanout": fan_seconds,
            "fanouts": [seconds for seconds, _ in fanouts], "repeat": args.repeat,
            "ratio": fan_seconds / baseline, "phases": report.seconds, "eligibility_queries": calls["eligibility"],
            "ledger_calls": calls["ledger"], "duplicate": duplicate_seconds, "duplicate_phases": duplicate.seconds,
            "ack_deadline": settings.ack_deadline_seconds, "date": datetime.now(UTC).date().isoformat(),
            "cpus": os.cpu_count(), "load": os.getloadavg()[0], "memory": memory_seconds,
            "memory_phases": memory_report.seconds,
        }
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


def format_report(r: dict[str, Any]) -> str:
    phases = ", ".join(f"{k} {v:.2f} s" for k, v in r["phases"].items() if k != "total")
    dup = ", ".join(f"{k} {v:.2f} s" for k, v in r["duplicate_phases"].items() if k != "total")
    rate = r["messages"] / r["fanout"]
    mem = ", ".join(f"{k} {v:.2f} s" for k, v in r["memory_phases"].items() if k not in ("total", "record_wait"))
    return "\n".join([
        f"Command: `.venv/bin/python bench/fanout.py --orgs {r['orgs']} --repeat {r['repeat']}` ({r['date']}, "
        f"{r['cpus']} cores, load average {r['load']:.1f} at the end: the machine was shared)",
        "",
        f"One tick, 3 due pipelines (2 with an integration), {r['orgs']:,} eligible orgs: {r['messages']:,} run "
        "requests. Pub/Sub and BigQuery emulators on the same machine.",
        "",
        "```",
        f"bare batched publisher, prepared messages: {' / '.join(f'{b:.2f}' for b in r['baselines'])} s "
        f"(median {r['baseline']:.2f} s, {r['messages'] / r['baseline']:,.0f} msg/s)",
        f"fan-out (eligibility + build + ledger + publish + record): {' / '.join(f'{f:.2f}' for f in r['fanouts'])} s "
        f"(median {r['fanout']:.2f} s, {rate:,.0f} msg/s)  ratio x{r['ratio']:.2f}",
        f"  phases of the median run: {phases}",
        f"  BigQuery calls: {r['eligibility_queries']} eligibility queries, {r['ledger_calls']} ledger calls "
        f"(chunks of {r['chunk']:,})",
        f"same tick again (duplicate, nothing published): {r['duplicate']:.2f} s  ({dup})",
        f"fan-out with the ledger in memory (eligibility on BigQuery, publishing): {r['memory']:.2f} s  "
        f"ratio x{r['memory'] / r['baseline']:.2f}  ({mem})",
        f"ack deadline {r['ack_deadline']} s: the fan-out uses {r['fanout'] / r['ack_deadline'] * 100:.0f}% of it",
        "```",
    ])


def write_section(report: str) -> None:
    results_file.write_section(TITLE, SECTION_START, SECTION_END, report, RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orgs", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=5000, help="fan-out chunk (ledger lookup + publish + record)")
    parser.add_argument("--repeat", type=int, default=3, help="fan-outs (each between two baselines)")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()
    report = format_report(run(args))
    print(report)
    if not args.no_write:
        write_section(report)
        print(f"\n(section updated in {RESULTS.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
