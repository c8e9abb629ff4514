"""One org floods the consumer over its cap while quiet orgs publish one run each: the cost of the hand-offs
and the quiet orgs' latency.

One local stack (Pub/Sub emulator + bqemulator), one consumer process (`python -m convergence consume`,
unmodified, /metrics on METRICS_PORT), the no-op pipeline `utility/smoke/noop` that bench/consume measures:

  baseline: on the idle consumer, --quiet-orgs orgs publish one run each at the same moment, --rounds times;
  flood:    one org publishes --flood runs at once; once its first run has started (+ --quiet-delay s), the
            quiet orgs publish one run each, as in the baseline.

Reported, for the flood phase:
  - republishes per run: convergence_messages_handed_off_total (requests + overflow subscriptions, delta
    over the phase) / runs published in it; target <= 1;
  - hand-offs of any single run: copies per run_id (and their `deferrals` attribute) seen on a subscription
    of the bench's own on the overflow topic; the overflow subscription's own hand-off counter must stay 0;
  - quiet orgs' latency, publish -> `pipeline_completed` (its Pub/Sub publish time), as a ratio against the
    baseline of the same run (p50 and the slowest quiet run);
  - how many flood runs had completed when the last quiet run completed (runs, not seconds).
Seconds depend on the machine (2 cores shared with other work): only ratios and run counts are compared.

    .venv/bin/python bench/flood.py [--flood 500] [--quiet-orgs 5] [--workers 8] [--per-org 2] [--rounds 3]
        [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import results_file  # noqa: E402
from bench.consume import PIPELINE, PLAN, load  # noqa: E402
from bench.consume.process import ConsumerProcess, MetricsPoller, free_port  # noqa: E402
from bench.consume.report import code_version as full_code_version  # noqa: E402
from bench.consume.stages import by_label, count_delta, parse, total  # noqa: E402

TITLE = "## Over-cap flood: hand-offs and quiet orgs' latency (bench/flood.py)"
SECTION_START = "<!-- bench/flood.py:start -->"
SECTION_END = "<!-- bench/flood.py:end -->"
FLOOD_ORG = "flood_org"
HANDED_OFF = "convergence_messages_handed_off_total"


def stage(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


class Tap:
    """A subscription of the bench's own on a topic; `on_message(message)` runs for each distinct message id
    (the emulator may redeliver to this subscription too)."""

    def __init__(self, settings: Any, topic: str, prefix: str):
        from convergence.infra.clients import subscriber_client

        self.settings = settings
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.subscriber = subscriber_client(settings)
        self.subscriber.create_subscription(name=settings.subscription_path(self.name),
                                            topic=settings.topic_path(topic), ack_deadline_seconds=60)
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.future = self.subscriber.subscribe(settings.subscription_path(self.name), callback=self._callback)

    def _callback(self, message: Any) -> None:
        with self.lock:
            fresh = message.message_id not in self.seen
            self.seen.add(message.message_id)
            if fresh:
                self.on_message(message)
        message.ack()

    def on_message(self, message: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        from convergence.infra.apply import delete_subscription

        self.future.cancel()
        with contextlib.suppress(Exception):
            self.future.result(timeout=10)
        self.subscriber.close()
        with contextlib.suppress(Exception):
            delete_subscription(self.name, self.settings)


class Events(Tap):
    """Per run: when its first pipeline_started and first successful pipeline_completed were published, and
    how many pipeline_started and pipeline_completed events it had (a redelivery of a run that already
    succeeded publishes its pipeline_completed again without running; a second run starts again)."""

    def __init__(self, settings: Any):
        self.started: dict[str, float] = {}
        self.completed: dict[str, float] = {}
        self.starts: Counter[str] = Counter()
        self.completions: Counter[str] = Counter()
        super().__init__(settings, settings.events_topic, "bench-flood-events")

    def on_message(self, message: Any) -> None:
        kind = message.attributes.get("event_type", "?")
        run_id = message.attributes.get("run_id", "")
        when = message.publish_time.timestamp()
        if kind == "pipeline_started":
            self.starts[run_id] += 1
            self.started.setdefault(run_id, when)
        elif kind == "pipeline_completed":
            self.completions[run_id] += 1
            if json.loads(message.data).get("status") == "SUCCESS":
                self.completed.setdefault(run_id, when)

    def wait(self, run_ids: list[str], timeout: float, progress: Any = None) -> bool:
        deadline = time.monotonic() + timeout
        wanted = set(run_ids)
        while time.monotonic() < deadline:
            with self.lock:
                if wanted <= self.completed.keys():
                    return True
            if progress:
                progress()
            time.sleep(0.25)
        return False

    def done_among(self, run_ids: list[str]) -> int:
        with self.lock:
            return sum(r in self.completed for r in run_ids)


class OverflowCopies(Tap):
    """Every copy republished to the overflow topic: per run_id, the `deferrals` attribute of each copy."""

    def __init__(self, settings: Any):
        self.deferrals: dict[str, list[str]] = defaultdict(list)
        self.published: list[float] = []
        super().__init__(settings, settings.overflow_topic, "bench-flood-overflow")

    def on_message(self, message: Any) -> None:
        self.deferrals[message.attributes.get("run_id", "")].append(message.attributes.get("deferrals", ""))
        self.published.append(message.publish_time.timestamp())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python bench/flood.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", type=int, default=500, help="runs the flooding org publishes at once")
    parser.add_argument("--quiet-orgs", type=int, default=5, help="orgs publishing one run each")
    parser.add_argument("--workers", type=int, default=8, help="settings.consumer_workers")
    parser.add_argument("--per-org", type=int, default=2, help="settings.per_org_concurrency")
    parser.add_argument("--rounds", type=int, default=3, help="baseline rounds of the quiet runs")
    parser.add_argument("--quiet-delay", type=float, default=0.5,
                        help="s after the flood's first pipeline_started before the quiet runs are published")
    parser.add_argument("--log-level", default="INFO", help="consumer log level (its logs go to a file)")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the consumer's log")
    args = parser.parse_args()
    for name in ("flood", "quiet_orgs", "workers", "per_org", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the consumer and the emulators
    command = " ".join([".venv/bin/python bench/flood.py", *sys.argv[1:]])
    text = render(run(args), command)
    print(text)
    if not args.no_write:
        results_file.write_section(TITLE, SECTION_START, SECTION_END, text)
        print("\n(section updated in bench/RESULTS.md)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from convergence.devstack.stack import LocalStack
    from convergence.observability.logging import configure_logging

    configure_logging("WARNING", "json")
    workdir = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    results: dict[str, Any] = {"args": vars(args), "load_start": loadavg(), "code": code_version()}
    ok = False
    try:
        with LocalStack() as stack:
            stack.apply_env()
            stage("local stack up")
            from convergence.infra.apply import apply, delete_subscription
            from convergence.infra.topology import Topology
            from convergence.runtime import Services
            from convergence.tenancy.onboarding import onboard_org

            settings = load.bench_settings(stack, load.make_configs_dir(workdir), args.workers, args.per_org,
                                           args.log_level)
            services = Services(settings)
            try:
                from convergence.warehouse.bootstrap import bootstrap

                if not bootstrap(services.bigquery, settings).ok:
                    raise RuntimeError("bootstrap of the central dataset failed")
                apply(Topology.from_settings(settings), settings)
                delete_subscription(settings.requests_subscription, settings)  # the consumer gets its own
                quiet = [f"quiet_org_{i:03d}" for i in range(args.quiet_orgs)]
                for org in [FLOOD_ORG, *quiet]:
                    onboard_org(services.bigquery, settings, services.cipher, org, PLAN)
                stage(f"platform ready: {FLOOD_ORG} + {len(quiet)} quiet orgs on plan {PLAN}")
                results.update(measure(settings, workdir, args, quiet, services.runlog))
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


def publish_quiet(publisher: Any, quiet: list[str], sent: dict[str, float]) -> list[Any]:
    requests = load.build_requests(quiet, len(quiet))
    now = time.time()
    sent.update({r.run_id: now for r in requests})
    publisher.publish_many(requests, timeout=60)
    return requests


def latencies(events: Events, sent: dict[str, float], run_ids: list[str]) -> list[float]:
    with events.lock:
        return [events.completed[r] - sent[r] for r in run_ids if r in events.completed]


def handed_off(samples: Any, subscription: str) -> float:
    return total(samples, HANDED_OFF, subscription=subscription)


def measure(settings: Any, workdir: Path, args: argparse.Namespace, quiet: list[str], runlog: Any) -> dict[str, Any]:
    from convergence.infra.apply import delete_subscription
    from convergence.publisher.requests import RequestPublisher

    settings = load.own_requests_subscription(settings).model_copy(update={"metrics_port": free_port()})
    requests_sub, overflow_sub = settings.requests_subscription, settings.overflow_subscription
    out: dict[str, Any] = {"settings": {"consumer_workers": settings.consumer_workers,
                                        "per_org_concurrency": settings.per_org_concurrency}}
    events = Events(settings)
    copies = OverflowCopies(settings)
    consumer = ConsumerProcess(settings, workdir / "consumer.log")
    publisher = RequestPublisher(settings)
    poller = MetricsPoller(settings.metrics_port, requests_sub)
    poller.start()
    sent: dict[str, float] = {}
    try:
        warmup = load.build_requests([FLOOD_ORG, *quiet], 2 * (len(quiet) + 1))
        publisher.publish_many(warmup, timeout=60)
        if not events.wait([r.run_id for r in warmup], timeout=180):
            raise RuntimeError(f"warm-up did not complete (consumer alive: {consumer.alive()}); "
                               f"consumer log: {consumer.log_path}")
        stage(f"consumer warmed up ({len(warmup)} runs)")

        baseline: list[list[float]] = []
        for i in range(args.rounds):
            time.sleep(1.0)
            ids = [r.run_id for r in publish_quiet(publisher, quiet, sent)]
            if not events.wait(ids, timeout=120):
                raise RuntimeError(f"baseline round {i + 1}: quiet runs did not complete")
            baseline.append(latencies(events, sent, ids))
            stage(f"baseline round {i + 1}: quiet latency p50 {statistics.median(baseline[-1]) * 1000:.0f} ms, "
                  f"slowest {max(baseline[-1]) * 1000:.0f} ms")
        with copies.lock:
            if copies.deferrals:
                raise RuntimeError(f"hand-offs before the flood: {dict(copies.deferrals)}")
        time.sleep(1.0)

        before = parse(poller.fresh())
        flood = load.build_requests([FLOOD_ORG], args.flood)
        flood_ids = [r.run_id for r in flood]
        t0 = time.time()
        publisher.publish_many(flood, timeout=300)
        stage(f"flood published: {len(flood)} runs of {FLOOD_ORG} in {time.time() - t0:.1f} s")
        deadline = time.monotonic() + 120
        while not any(r in events.started for r in flood_ids):
            if time.monotonic() > deadline:
                raise RuntimeError("no flood run started within 120 s")
            time.sleep(0.05)
        time.sleep(args.quiet_delay)
        quiet_requests = publish_quiet(publisher, quiet, sent)
        quiet_ids = [r.run_id for r in quiet_requests]
        stage(f"quiet runs published ({events.done_among(flood_ids)} flood runs completed)")
        if not events.wait(quiet_ids, timeout=max(300, args.flood)):
            raise RuntimeError(f"quiet runs did not complete during the flood; consumer log: {consumer.log_path}")
        stage(f"quiet runs completed ({events.done_among(flood_ids)} flood runs completed)")
        last_report = [time.monotonic()]

        def progress() -> None:
            if time.monotonic() - last_report[0] >= 15:
                last_report[0] = time.monotonic()
                stage(f"flood: {events.done_among(flood_ids)}/{len(flood_ids)} completed")

        if not events.wait(flood_ids, timeout=max(600, args.flood * 3), progress=progress):
            raise RuntimeError(f"only {events.done_among(flood_ids)} of {len(flood_ids)} flood runs completed; "
                               f"consumer log: {consumer.log_path}")
        stage("flood completed")
        settle(poller, (requests_sub, overflow_sub))
        after = parse(poller.fresh())

        with events.lock:
            last_quiet = max(events.completed[r] for r in quiet_ids)
            flood_done_then = sum(events.completed[r] <= last_quiet for r in flood_ids)
            quiet_sent = sent[quiet_ids[0]]
            flood_done_before = sum(events.completed[r] <= quiet_sent for r in flood_ids)
            flood_times = sorted(events.completed[r] for r in flood_ids)
            completions = Counter(events.completions[r] for r in [*flood_ids, *quiet_ids])
            starts = Counter(events.starts[r] for r in [*flood_ids, *quiet_ids])
        with copies.lock:
            per_run = {run_id: len(values) for run_id, values in copies.deferrals.items()}
            deferral_values = Counter(v for values in copies.deferrals.values() for v in values)
            with events.lock:
                last_quiet_start = max(events.started[r] for r in quiet_ids)
            handed_before_quiet = sum(when <= last_quiet_start for when in copies.published)
        outcome = {"name": "convergence_outcomes_total", "label": "outcome"}
        out["flood"] = {
            "published": len(flood_ids) + len(quiet_ids),
            "handed_off": {sub: handed_off(after, sub) - handed_off(before, sub) for sub in (requests_sub,
                                                                                              overflow_sub)},
            "copies_max": max(per_run.values(), default=0),
            "copies_total": sum(per_run.values()),
            "runs_handed_off": len(per_run),
            "deferral_values": dict(deferral_values),
            "outcomes": {sub: count_delta(by_label(after, **outcome, subscription=sub),
                                          by_label(before, **outcome, subscription=sub))
                         for sub in (requests_sub, overflow_sub)},
            "quiet": latencies(events, sent, quiet_ids),
            "flood_done_at_last_quiet": flood_done_then,
            "flood_done_at_quiet_publish": flood_done_before,
            "handed_off_before_last_quiet_start": handed_before_quiet,
            "flood_span_s": flood_times[-1] - t0,
            "completions_per_run": dict(completions),
            "starts_per_run": dict(starts),
            "runlog_succeeded": load.runlog_succeeded(runlog, [*flood, *quiet_requests]),
        }
        out["baseline"] = baseline
        out["subscriptions"] = {"requests": requests_sub, "overflow": overflow_sub}
    finally:
        poller.stop()
        for tap in (events, copies):
            with contextlib.suppress(Exception):
                tap.close()
        publisher.close()
        out["exit_code"] = consumer.stop()
        with contextlib.suppress(Exception):
            delete_subscription(requests_sub, settings)
    return out


def settle(poller: MetricsPoller, subscriptions: tuple[str, ...], quiet: float = 3.0, timeout: float = 120.0) -> None:
    """Until neither subscription received anything for `quiet` s: late acks and hand-offs are counted."""
    start = time.monotonic()
    last, still_since = -1.0, start
    while time.monotonic() - start < timeout:
        samples = parse(poller.fresh())
        received = sum(total(samples, "convergence_messages_received_total", subscription=s) for s in subscriptions)
        if received != last:
            last, still_since = received, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return
        time.sleep(0.5)


def code_version() -> str:
    """The commit, and the consumer files that differ from it (the others only counted)."""
    text = full_code_version()
    head, sep, files = text.partition(" + uncommitted changes in ")
    if not sep:
        return text
    changed = files.split(", ")
    consumer = [name for name in changed if name.startswith("consumer/")]
    return (f"{head} + uncommitted changes in {len(changed)} files" +
            (f", of them in consumer/: {', '.join(consumer)}" if consumer else ", none in consumer/"))


def redeliveries(f: dict[str, Any]) -> str:
    again = sum(count for completed, count in f["completions_per_run"].items() if completed > 1)
    if not again:
        return ""
    started_twice = sum(count for started, count in f["starts_per_run"].items() if started > 1)
    duplicates = sum(outcomes.get("duplicate", 0) for outcomes in f["outcomes"].values())
    return (f"{again} runs had a second pipeline_completed event: a copy of a run that had already succeeded "
            f"was delivered again (outcomes `duplicate`: {duplicates}), and the consumer publishes its final "
            f"event again; {started_twice} runs started twice. ")


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def render(r: dict[str, Any], command: str) -> str:
    a, f = r["args"], r["flood"]
    subs = r["subscriptions"]
    requests_off, overflow_off = (round(f["handed_off"][subs[k]]) for k in ("requests", "overflow"))
    handed = requests_off + overflow_off
    per_run = handed / f["published"]
    once = f["copies_max"] <= 1 and overflow_off == 0
    base_all = [v for round_ in r["baseline"] for v in round_]
    base_p50 = statistics.median(base_all)
    base_slowest = statistics.median(max(round_) for round_ in r["baseline"])
    quiet_p50, quiet_slowest = statistics.median(f["quiet"]), max(f["quiet"])
    flood_n = a["flood"]
    settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
    out = [
        f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d %H:%M UTC}). Consumer: `python -m convergence "
        f"consume` in its own process, unmodified ({settings}); pipeline `{PIPELINE}`. `{FLOOD_ORG}` publishes "
        f"{flood_n} runs at once; {a['quiet_orgs']} quiet orgs publish one run each {a['quiet_delay']:g} s after "
        f"the flood's first `pipeline_started`. Baseline: the same quiet runs on the idle consumer before the "
        f"flood, {a['rounds']} rounds. Service code {r['code']}. Machine: 2 cores shared with other sessions, "
        f"load average (1/5/15 min) {r['load_start']} at the start, {r.get('load_end', '?')} at the end: compare "
        f"ratios and run counts, not seconds.",
        "",
        "```",
        f"republishes per run   handed off / runs published : {per_run:.2f}   ({handed} / {f['published']}; "
        f"target <= 1: {'PASS' if per_run <= 1 else 'FAIL'})",
        f"hand-offs of one run  max copies on overflow topic: {f['copies_max']}      (deferrals values "
        f"{f['deferral_values']}; overflow subscription handed off {overflow_off}; at most once: "
        f"{'PASS' if once else 'FAIL'})",
        f"quiet orgs' latency   during flood / baseline     : p50 x{quiet_p50 / base_p50:.2f}, slowest "
        f"x{quiet_slowest / base_slowest:.2f}",
        f"flood runs completed when the last quiet run completed: {f['flood_done_at_last_quiet']} of {flood_n} "
        f"({f['flood_done_at_last_quiet'] / flood_n:.1%}; {f['flood_done_at_quiet_publish']} when they were published)",
        "",
        f"quiet publish -> pipeline_completed: baseline p50 {_ms(base_p50)}, slowest {_ms(base_slowest)} (median "
        f"of the rounds' slowest; {len(base_all)} runs); during the flood p50 {_ms(quiet_p50)}, slowest "
        f"{_ms(quiet_slowest)} ({len(f['quiet'])} runs)",
        f"hand-offs: requests subscription {requests_off}, overflow subscription {overflow_off}; "
        f"{f['runs_handed_off']} runs seen on the overflow topic, {f['copies_total']} copies",
        f"outcomes: requests {f['outcomes'][subs['requests']]}; overflow {f['outcomes'][subs['overflow']]}",
        f"flood: all {flood_n} completed {f['flood_span_s']:.1f} s after the publish started; pipeline_completed "
        f"events per run {f['completions_per_run']}, pipeline_started per run {f['starts_per_run']}; run log "
        f"SUCCESS {f['runlog_succeeded']}/{f['published']}",
        "```",
        "",
        f"The quiet runs are published behind the flood's {flood_n} messages on the requests subscription: "
        f"{f['handed_off_before_last_quiet_start']} of the {f['copies_total']} hand-offs were published before "
        f"the last quiet run started, and {f['flood_done_at_last_quiet'] - f['flood_done_at_quiet_publish']} "
        f"flood runs completed while the quiet runs waited. {redeliveries(f)}"
        f"Consumer exit code {r.get('exit_code', '?')}.",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    main()
