"""`python -m bench.consume`: see bench/consume/__init__.py."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.consume import PLAN, load, report
from bench.consume.process import ConsumerProcess, CpuMeter, MetricsPoller, RssSampler, find_pid, free_port, rss_kb
from bench.consume.stages import by_label, count_delta, parse, stage_timings, total


def stage(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.consume", description=__doc__)
    parser.add_argument("--messages", type=int, default=2000, help="messages for (a) and run requests for (b)")
    parser.add_argument("--orgs", type=int, default=8, help="orgs the run requests are spread over")
    parser.add_argument("--workers", type=int, default=8, help="settings.consumer_workers (concurrent runs)")
    parser.add_argument("--per-org", type=int, default=2, help="settings.per_org_concurrency")
    parser.add_argument("--warmup", type=int, default=40, help="runs before RSS 'before' and (b)")
    parser.add_argument("--window", type=int, default=500,
                        help="(b): run requests kept published and not completed (0: the whole backlog at once)")
    parser.add_argument("--latency-runs", type=int, default=60)
    parser.add_argument("--latency-rate", type=float, default=0.0,
                        help="requests/s for (c); default: a quarter of the rate measured in (b), at most 50")
    parser.add_argument("--log-level", default="INFO", help="consumer log level (its logs go to a file)")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    parser.add_argument("--label", default="main", help="which block of this benchmark's RESULTS.md section to replace")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the consumer's log")
    args = parser.parse_args()
    for name in ("messages", "orgs", "workers", "per_org", "latency_runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the consumer and the emulators
    command = " ".join([".venv/bin/python -m bench.consume", *sys.argv[1:]])
    results = run(args)
    text = report.render(results, command)
    print(text)
    if not args.no_write:
        report.write(text, args.label)
        print("\n(section updated in bench/RESULTS.md)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from convergence.devstack.stack import LocalStack
    from convergence.observability.logging import configure_logging

    configure_logging("WARNING", "json")
    workdir = Path(tempfile.mkdtemp(prefix="bench-consume-"))
    results: dict[str, Any] = {"args": vars(args), "load_start": loadavg(), "code": report.code_version()}
    ok = False
    try:
        with LocalStack() as stack:
            stack.apply_env()
            stage("local stack up")
            from convergence.infra.apply import apply, delete_subscription
            from convergence.infra.topology import Topology
            from convergence.runtime import Services
            from convergence.tenancy.onboarding import onboard_org
            from convergence.warehouse.bootstrap import bootstrap

            settings = load.bench_settings(stack, load.make_configs_dir(workdir), args.workers, args.per_org,
                                           args.log_level)
            services = Services(settings)
            try:
                if not bootstrap(services.bigquery, settings).ok:
                    raise RuntimeError("bootstrap of the central dataset failed")
                apply(Topology.from_settings(settings), settings)
                delete_subscription(settings.requests_subscription, settings)  # the consumer gets its own
                orgs = [f"bench_org_{i:03d}" for i in range(args.orgs)]
                for org in orgs:
                    onboard_org(services.bigquery, settings, services.cipher, org, PLAN)
                stage(f"platform ready: {len(orgs)} orgs on plan {PLAN}")
                pids = {"bqemulator": find_pid("bqemulator", f"--port={stack.bigquery.port}"),
                        "pubsub emulator": find_pid("java", f"--port={stack.pubsub.port}"),
                        "bench process": os.getpid()}
                results["bare"] = load.phase_bare(settings, load.build_requests(orgs, args.messages), pids)
                stage(f"(a) bare subscriber: {results['bare']['rate']:.0f} msg/s")
                results["consumer"] = measure_consumer(settings, workdir, args, orgs, pids, services.runlog)
                results["bare_latency"] = load.summarize(load.phase_bare_latency(
                    settings, load.build_requests(orgs, args.latency_runs), results["consumer"]["latency_rate"]))
                stage(f"(c) bare latency p50 {results['bare_latency']['p50'] * 1000:.1f} ms")
            finally:
                results["load_end"] = loadavg()
                services.close()
        ok = True
    finally:
        if ok and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"(consumer log kept in {workdir})")
    return results


def measure_consumer(settings: Any, workdir: Path, args: argparse.Namespace, orgs: list[str],
                     pids: dict[str, int | None], runlog: Any) -> dict[str, Any]:
    """(b), (c) and (d) for one consumer process, with its /metrics scraped around (b) and (c)."""
    from convergence.infra.apply import delete_subscription
    from convergence.publisher.requests import RequestPublisher

    settings = load.own_requests_subscription(settings).model_copy(update={"metrics_port": free_port()})
    subscription = settings.requests_subscription
    out: dict[str, Any] = {"settings": {name: getattr(settings, name) for name in report.REPORTED_SETTINGS
                                        if hasattr(settings, name)}}
    consumer = ConsumerProcess(settings, workdir / "consumer.log")
    pids = {**pids, "consumer process": consumer.pid}
    publisher = RequestPublisher(settings)
    poller = MetricsPoller(settings.metrics_port, subscription)
    poller.start()
    completions: load.Completions | None = None
    try:
        publisher.publish_many(load.build_requests(orgs, args.warmup))
        if poller.wait_for(args.warmup, timeout=120) < args.warmup:
            raise RuntimeError(f"warm-up did not complete ({poller.polls} scrapes, {poller.errors} failed; "
                               f"consumer alive: {consumer.alive()}); consumer log: {consumer.log_path}")
        time.sleep(1.0)
        rss_before = rss_kb(consumer.pid)
        stage(f"consumer warmed up ({args.warmup} runs), RSS {rss_before / 1024:.1f} MiB")

        # (b) throughput on a backlog; completions from /metrics, nothing subscribed to the events topic
        attached = load.events_topic_subscriptions(settings)
        if attached:
            raise RuntimeError(f"subscriptions on the events topic before (b): {attached}")
        count = args.messages
        requests = load.build_requests(orgs, count)
        before = parse(poller.fresh())
        base = total(before, "convergence_outcomes_total", subscription=subscription, outcome="succeeded")
        sampler = RssSampler(consumer.pid)
        sampler.start()
        meter = CpuMeter(pids)
        marks: dict[int, int] = {}
        quarter = max(1, count // 4)

        def progress(done: int) -> None:
            for q in (1, 2, 3, 4):
                if done >= q * quarter and q not in marks:
                    marks[q] = rss_kb(consumer.pid)
                    stage(f"(b) {done}/{count} completed, RSS {marks[q] / 1024:.1f} MiB")

        window = args.window if 0 < args.window < count else count
        got = load.feed(publisher, poller, requests, window, base, timeout=max(600, count * 1.0), progress=progress)
        cpu = meter.stop()
        rss_samples = sampler.stop()
        if got < count:
            raise RuntimeError(f"only {got} of {count} runs completed; consumer log: {consumer.log_path}")
        after = parse(poller.fresh())
        first, last = poller.crossing(base + 1), poller.crossing(base + count)
        runs = {"name": "convergence_runs_total", "label": "status"}
        out["throughput"] = {
            "runs": count, "rate": (count - 1) / (last - first), "span_s": last - first, "cpu": cpu,
            "statuses": count_delta(by_label(after, **runs), by_label(before, **runs)),
            "stages": stage_timings(before, after), "window": window,
        }
        time.sleep(1.0)
        out["memory"] = {"before_kb": rss_before, "after_kb": rss_kb(consumer.pid), "quarters_kb": marks,
                         "peak_kb": max(rss_samples, default=0)}
        out["throughput"]["runlog_succeeded"] = load.runlog_succeeded(runlog, requests)
        stage(f"(b) {out['throughput']['rate']:.1f} runs/s; {out['throughput']['statuses']}; run log "
              f"{out['throughput']['runlog_succeeded']}/{count} SUCCESS")

        completions = load.Completions(settings)
        out["settle_s"] = settle(poller, subscription)
        # (c) latency at a steady moderate rate, consumer otherwise idle
        rate = args.latency_rate or min(50.0, max(0.25, round(out["throughput"]["rate"] / 4, 2)))
        out["latency_rate"] = rate
        latency_requests = load.build_requests(orgs, args.latency_runs)
        sent: dict[str, float] = {}
        before = parse(poller.fresh())

        def publish(i: int) -> None:
            sent[latency_requests[i].run_id] = time.time()
            publisher.publish_request(latency_requests[i])

        load.paced(len(latency_requests), rate, publish)
        completions.wait(list(sent), timeout=300)
        time.sleep(0.5)  # the last runs' acks and observations follow their final event
        after = parse(poller.fresh())
        with completions.lock:
            latencies = [completions.completed[r] - t for r, t in sent.items() if r in completions.completed]
        out["latency"] = {**load.summarize(latencies), "stages": stage_timings(before, after)}
        out["latency_rss_kb"] = rss_kb(consumer.pid)
        stage(f"(c) publish -> pipeline_completed p50 {out['latency']['p50'] * 1000:.0f} ms "
              f"({len(latencies)}/{len(sent)} completed)")
    finally:
        poller.stop()
        if completions is not None:
            out["event_types"] = dict(completions.event_types)
            with contextlib.suppress(Exception):
                completions.close()
        publisher.close()
        out["exit_code"] = consumer.stop()
        with contextlib.suppress(OSError):
            out["log_lines"] = sum(1 for _ in consumer.log_path.open("rb"))
        with contextlib.suppress(Exception):
            delete_subscription(subscription, settings)
    return out


def settle(poller: MetricsPoller, subscription: str, quiet: float = 3.0, timeout: float = 300.0) -> float:
    """Wait until the consumer received nothing new for `quiet` s (redelivered copies, late acks), so (c)
    starts on an idle consumer; returns the seconds waited."""
    start = time.monotonic()
    last, still_since = -1.0, start
    while time.monotonic() - start < timeout:
        received = total(parse(poller.fresh()), "convergence_messages_received_total", subscription=subscription)
        if received != last:
            last, still_since = received, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            break
        time.sleep(0.5)
    return time.monotonic() - start


if __name__ == "__main__":
    main()
