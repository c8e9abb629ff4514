"""Throughput, latency and memory of the whole consumer (issue 4, "Performance (benchmark)").

One local stack (Pub/Sub emulator + bqemulator), one run, the same number of messages for each part:

  (a) baseline: a bare streaming-pull subscriber whose callback only acks (library defaults), on its
      own topic/subscription, fed the same run-request payloads; msgs/s from its first to its last callback.
  (b) the whole consumer (ConsumerService: org gate, quota count, run log, events) on run requests for
      the one-step no-op pipeline `utility/smoke/noop`, spread round-robin over --orgs orgs, as a backlog;
      run requests/s from the first to the last `pipeline_completed` (Pub/Sub publish times of the events),
      and its ratio to (a).
  (c) latency: with the consumer otherwise idle, --latency-runs requests published at a steady
      --latency-rate; publish -> `pipeline_completed` published, p50/p95; baseline: publish -> bare
      subscriber callback at the same rate.
  (d) memory: consumer process RSS after a warm-up, during and after (b) (use --messages 10000 for the
      issue's "memory flat over 10,000 messages").

The consumer runs as its own process by default (as `convergence consume` does in production; the
benchmark's publisher and event counter do not share its GIL); `--consumer thread` runs it in this
process with devstack.BackgroundConsumer instead. A probe inside the consumer process times each stage
of a run (BigQuery calls and their HTTP requests, event publish/flush, thread hops, slot wait, event
loop lag) and adds nothing measurable (a few perf_counter calls per stage). `--py-spy` adds a separate,
unmeasured phase under py-spy (CPU samples of the consumer process, grouped by component).

    .venv/bin/python bench/consume.py [--messages 2000] [--orgs 8] [--workers 8] [--per-org 2]
        [--latency-runs 100] [--latency-rate 5] [--py-spy] [--no-write]

Figures go to stdout and to this benchmark's section of bench/RESULTS.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PIPELINE = "utility/smoke/noop"
PLAN = "BENCH"
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION_START = "<!-- bench/consume.py:start -->"
SECTION_END = "<!-- bench/consume.py:end -->"
PUBSUB_NAME_FIELDS = (
    "requests_topic", "requests_subscription", "events_topic", "ticks_topic", "ticks_subscription",
    "dead_letter_topic", "dead_letter_subscription", "ticks_dead_letter_topic",
    "ticks_dead_letter_subscription", "push_subscription", "handoff_topic",
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ================================================================================================
# Probe: timing instrumentation installed inside the consumer process (bench only; no code change)
# ================================================================================================
class Probe:
    """count / total / max per stage plus a bounded reservoir for percentiles: constant memory."""

    RESERVOIR = 1000

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.stats: dict[str, list[Any]] = {}

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            entry = self.stats.get(name)
            if entry is None:
                entry = self.stats[name] = [0, 0.0, 0.0, []]
            entry[0] += 1
            entry[1] += seconds
            entry[2] = max(entry[2], seconds)
            samples = entry[3]
            if len(samples) < self.RESERVOIR:
                samples.append(seconds)
            else:
                slot = random.randrange(entry[0])
                if slot < self.RESERVOIR:
                    samples[slot] = seconds

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self.lock:
            out = {}
            for name, (count, total, peak, samples) in self.stats.items():
                ordered = sorted(samples)
                out[name] = {
                    "count": count, "total_s": total, "mean_ms": total / count * 1000, "max_ms": peak * 1000,
                    "p50_ms": _pct(ordered, 50) * 1000, "p95_ms": _pct(ordered, 95) * 1000,
                }
            return out

    # -- wrappers --------------------------------------------------------------------------------
    def wrap(self, owner: Any, attr: str, name: str) -> None:
        original = getattr(owner, attr)
        if asyncio.iscoroutinefunction(original):
            @functools.wraps(original)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    self.add(name, time.perf_counter() - start)
            timed_async._probe_name = name  # type: ignore[attr-defined]
            setattr(owner, attr, timed_async)
        else:
            @functools.wraps(original)
            def timed(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self.add(name, time.perf_counter() - start)
            timed._probe_name = name  # type: ignore[attr-defined]
            setattr(owner, attr, timed)


def _pct(ordered: list[float], pct: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def _http_kind(method: str, path: str) -> str:
    if path.endswith("/insertAll"):
        return "insertAll"
    if method == "POST" and path.endswith("/jobs"):
        return "jobs.insert"
    if method == "POST" and path.endswith("/queries"):
        return "jobs.query"
    if "/queries/" in path:
        return "getQueryResults"
    if "/jobs/" in path:
        return "jobs.get"
    if "/data" in path:
        return "tabledata.list"
    return f"{method} other"


def install_probe(service: Any, probe: Probe) -> None:
    """Time every stage of a run in this process: BigQuery operations (and the HTTP requests under them),
    event publishing, the thread hops, the executor and its observers, the pool's hand-over to the loop."""
    import consumer.handler
    import consumer.observers
    from consumer.pool import SubscriberPool
    from google.cloud import _http

    services = service.services
    runlog, gate, events = services.runlog, services.gate, services.events
    for owner, attr, name in (
        (runlog, "has_succeeded", "bq.has_succeeded"), (gate, "check", "bq.gate_check"),
        (gate, "record_run", "bq.gate_record_run"), (runlog, "run_started", "bq.runlog_started"),
        (runlog, "run_finished", "bq.runlog_finished"), (runlog, "record_rejected", "bq.runlog_rejected"),
        (events, "publish_event", "events.publish_event"), (events, "flush", "events.flush"),
        (service.loader, "load", "config.load"), (service.handler, "handle", "handler.handle"),
    ):
        probe.wrap(owner, attr, name)
    for cls, hooks in ((consumer.observers.RunLogObserver, ("pipeline_started", "pipeline_finished")),
                       (consumer.observers.EventObserver, ("pipeline_started", "step_started", "step_finished",
                                                           "pipeline_finished"))):
        for hook in hooks:
            probe.wrap(cls, hook, f"observer.{cls.__name__}.{hook}")
    probe.wrap(consumer.handler.Executor, "run", "executor.run (incl. observers)")

    # asyncio.to_thread as seen from the loop: minus the wrapped call's own time = the hop + queueing for
    # the default executor's threads (min(32, cpus + 4) = 6 here).
    original_to_thread = asyncio.to_thread

    async def timed_to_thread(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await original_to_thread(func, *args, **kwargs)
        finally:
            name = getattr(func, "_probe_name", getattr(func, "__qualname__", "?"))
            probe.add(f"to_thread[{name}]", time.perf_counter() - start)

    asyncio.to_thread = timed_to_thread  # type: ignore[assignment]

    # Every BigQuery REST request (google-cloud-bigquery -> JSONConnection.api_request).
    original_request = _http.JSONConnection.api_request

    def timed_request(self: Any, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original_request(self, method, path, *args, **kwargs)
        finally:
            probe.add(f"http.{_http_kind(method, path)}", time.perf_counter() - start)

    _http.JSONConnection.api_request = timed_request  # type: ignore[method-assign]

    # The pool: publish -> callback (delivery; in a backlog it is the time queued), callback thread ->
    # handler on the loop (thread hop + waiting for a run slot).
    received: dict[str, float] = {}
    original_on_message = SubscriberPool._on_message

    def on_message(self: Any, message: Any) -> None:
        now = time.time()
        with contextlib.suppress(Exception):
            probe.add("pubsub.publish_to_callback", now - message.publish_time.timestamp())
        if len(received) < 100_000:
            received[message.message_id] = time.perf_counter()
        original_on_message(self, message)

    SubscriberPool._on_message = on_message  # type: ignore[method-assign]
    timed_handle = service.handler.handle

    async def handle(data: bytes, attributes: Any, message_id: str, *args: Any, **kwargs: Any) -> Any:
        start = received.pop(message_id, None)
        if start is not None:
            probe.add("pool.callback_to_handler (hop + slot wait)", time.perf_counter() - start)
        return await timed_handle(data, attributes, message_id, *args, **kwargs)

    service.handler.handle = handle


async def loop_lag(probe: Probe, interval: float = 0.02) -> None:
    """How late a 20 ms sleep wakes up: time the loop spends blocked in synchronous code."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        probe.add("loop.lag", max(0.0, loop.time() - start - interval))


def consumer_snapshot(service: Any, probe: Probe) -> dict[str, Any]:
    pool = service.pools[0]
    return {"probe": probe.snapshot(), "pool": dict(vars(pool.stats)), "rss_kb": rss_kb(os.getpid()),
            "bq_calls": service.services.runlog.calls}


# ================================================================================================
# The consumer process (this file run with --child-consumer): `convergence consume` plus the probe
# ================================================================================================
def child_consumer() -> None:
    from consumer.service import ConsumerService
    from observability.logging import configure_logging
    from runtime import Services
    from settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, settings.gcp_project_id)
    out = Path(os.environ["BENCH_PROBE_OUT"])
    probe = Probe()
    services = Services(settings)
    service = ConsumerService(settings, services, notify=services.notifier)
    if os.environ.get("BENCH_PROBE", "1") == "1":
        install_probe(service, probe)
    sequence = 0

    def dump() -> None:  # on SIGUSR1: write what was measured since the last dump, then start afresh
        nonlocal sequence
        data = consumer_snapshot(service, probe)
        probe.reset()
        tmp = out.with_name(f"{out.name}.{sequence}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.rename(out.with_name(f"{out.name}.{sequence}.json"))
        sequence += 1

    async def main() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)
        lag = asyncio.create_task(loop_lag(probe))
        try:
            await service.run()  # SIGTERM/SIGINT: drain and stop, as `convergence consume`
        finally:
            lag.cancel()

    asyncio.run(main())


# ================================================================================================
# Process metrics from /proc
# ================================================================================================
def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int | None) -> float:
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


def find_pid(*needles: str) -> int | None:
    """The process whose command line contains every needle (the emulators of this run's stack)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(needle in cmdline for needle in needles) and "setpriv" not in cmdline.split(" ", 1)[0]:
            return int(entry.name)
    return None


class CpuMeter:
    """CPU seconds of each process of the stack over one phase."""

    def __init__(self, pids: dict[str, int | None]):
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        used = {name: cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}
        used["wall_s"] = wall
        return used


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(daemon=True, name="rss-sampler")
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.perf_counter(), rss_kb(self.pid)))
            self._stop_event.wait(self.interval)

    def stop(self) -> list[tuple[float, int]]:
        self._stop_event.set()
        self.join(5)
        return self.samples


# ================================================================================================
# Platform on the local stack (the same steps as tests/harness.py, with a benchmark plans.yml)
# ================================================================================================
def make_configs_dir(root: Path) -> Path:
    """A copy of the repo's configs (the loader refuses paths that resolve outside its directory, so no
    symlinks) whose setup/plans.yml adds a BENCH plan with a daily quota that never stops a run."""
    import shutil

    import yaml

    configs = root / "configs"
    shutil.copytree(ROOT / "configs", configs)
    plans_path = configs / "setup" / "plans.yml"
    plans = yaml.safe_load(plans_path.read_text())
    plans["plans"][PLAN] = {"daily_pipeline_runs": 100_000_000, "monthly_pipeline_runs": 1_000_000_000,
                            "concurrent_pipelines": 1000}
    plans_path.write_text(yaml.safe_dump(plans, sort_keys=False))
    return configs


def bench_settings(stack: Any, configs: Path, args: argparse.Namespace) -> Any:
    from settings.model import Settings, load_settings

    suffix = uuid.uuid4().hex[:8]
    names = {name: f"{Settings.model_fields[name].default}-bench-{suffix}" for name in PUBSUB_NAME_FIELDS}
    return load_settings(
        pubsub_emulator_host=stack.pubsub.host, bigquery_emulator_host=stack.bigquery.host,
        gcp_project_id=stack.project, environment="local", central_dataset=f"bench_{suffix}",
        configs_dir=configs, local_keyring_path=configs.parent / "keyring.key",
        consumer_workers=args.workers, per_org_concurrency=args.per_org, log_level=args.log_level,
        log_format="json", shutdown_grace_seconds=10, **names,
    )


def settings_env(settings: Any) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None or name == "ca_root_api_key":
            continue
        env[name.upper()] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return env


def create_topic_and_subscription(settings: Any, topic: str, subscription: str) -> None:
    from infra.clients import publisher_client, subscriber_client

    publisher = publisher_client(settings)
    subscriber = subscriber_client(settings)
    publisher.create_topic(name=settings.topic_path(topic))
    subscriber.create_subscription(name=settings.subscription_path(subscription),
                                   topic=settings.topic_path(topic), ack_deadline_seconds=60)
    subscriber.close()
    publisher.transport.close()


# ================================================================================================
# Counting pipeline_completed events (Pub/Sub publish times: the counter's own speed does not matter)
# ================================================================================================
class Completions:
    def __init__(self, settings: Any):
        from infra.clients import subscriber_client

        name = f"bench-events-{uuid.uuid4().hex[:8]}"
        create_subscription_on(settings, name, settings.events_topic)
        self.subscriber = subscriber_client(settings)
        self.lock = threading.Lock()
        self.completed: dict[str, tuple[float, str]] = {}  # run_id -> (publish time, status)
        self.event_types: Counter[str] = Counter()
        self.future = self.subscriber.subscribe(settings.subscription_path(name), callback=self._on_event)

    def _on_event(self, message: Any) -> None:
        attributes = message.attributes
        kind = attributes.get("event_type", "?")
        with self.lock:
            self.event_types[kind] += 1
            if kind == "pipeline_completed":
                run_id = attributes.get("run_id", "")
                if run_id not in self.completed:
                    status = json.loads(message.data).get("status", "?")
                    self.completed[run_id] = (message.publish_time.timestamp(), status)
        message.ack()

    def wait(self, run_ids: list[str], timeout: float, progress: Callable[[int], None] | None = None) -> int:
        deadline = time.monotonic() + timeout
        wanted = set(run_ids)
        while True:
            with self.lock:
                done = len(wanted.intersection(self.completed))
            if progress:
                progress(done)
            if done >= len(wanted) or time.monotonic() > deadline:
                return done
            time.sleep(0.25)

    def times(self, run_ids: list[str]) -> list[float]:
        with self.lock:
            return sorted(self.completed[run_id][0] for run_id in run_ids if run_id in self.completed)

    def statuses(self, run_ids: list[str]) -> Counter[str]:
        with self.lock:
            return Counter(self.completed[run_id][1] for run_id in run_ids if run_id in self.completed)

    def close(self) -> None:
        self.future.cancel()
        with contextlib.suppress(Exception):
            self.future.result(timeout=10)
        self.subscriber.close()


def create_subscription_on(settings: Any, name: str, topic: str) -> None:
    from infra.clients import subscriber_client

    subscriber = subscriber_client(settings)
    subscriber.create_subscription(name=settings.subscription_path(name), topic=settings.topic_path(topic),
                                   ack_deadline_seconds=60)
    subscriber.close()


# ================================================================================================
# The consumer under test
# ================================================================================================
class ConsumerUnderTest:
    def __init__(self, settings: Any, workdir: Path, mode: str, probe: bool):
        self.mode = mode
        self.settings = settings
        self.out = workdir / "probe"
        self.sequence = 0
        self.log_path = workdir / "consumer.log"
        if mode == "process":
            env = {**os.environ, **settings_env(settings), "BENCH_PROBE_OUT": str(self.out),
                   "BENCH_PROBE": "1" if probe else "0"}
            self.log = self.log_path.open("ab")
            self.process = subprocess.Popen(  # noqa: S603 - this file
                [sys.executable, str(Path(__file__).resolve()), "--child-consumer"], cwd=ROOT, env=env,
                stdout=self.log, stderr=subprocess.STDOUT)
            self.pid = self.process.pid
        else:
            from devstack.background import BackgroundConsumer
            from runtime import Services

            self.probe = Probe()
            services = Services(settings)
            self.background = BackgroundConsumer(settings, services, notify=services.notifier)
            if probe:
                install_probe(self.background.service, self.probe)
            self.background.start()
            self.background.loop.call_soon_threadsafe(lambda: self.background.loop.create_task(loop_lag(self.probe)))
            self.pid = os.getpid()

    def snapshot(self, timeout: float = 30) -> dict[str, Any]:
        """Probe figures since the previous snapshot (and pool stats so far)."""
        if self.mode == "thread":
            data = consumer_snapshot(self.background.service, self.probe)
            self.probe.reset()
            return data
        path = self.out.with_name(f"{self.out.name}.{self.sequence}.json")
        self.sequence += 1
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"no probe snapshot from the consumer; log: {self.log_path}")
            time.sleep(0.05)
        return json.loads(path.read_text())

    def alive(self) -> bool:
        return self.process.poll() is None if self.mode == "process" else self.background.thread.is_alive()

    def stop(self) -> int | None:
        if self.mode == "thread":
            self.background.stop()
            return 0 if self.background.error is None else 1
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
        self.log.close()
        return code


# ================================================================================================
# Phases
# ================================================================================================
def build_requests(orgs: list[str], count: int) -> list[Any]:
    from publisher.requests import RequestPublisher

    return [RequestPublisher.build(orgs[i % len(orgs)], PIPELINE, requested_by="bench") for i in range(count)]


def phase_bare(settings: Any, payloads: list[Any], cpu_pids: dict[str, int | None]) -> dict[str, Any]:
    """(a) backlog of the same payloads on a fresh topic, then a subscriber that only acks."""
    from infra.clients import subscriber_client
    from publisher.requests import RequestPublisher

    suffix = uuid.uuid4().hex[:8]
    topic, subscription = f"bench-bare-{suffix}", f"bench-bare-{suffix}"
    create_topic_and_subscription(settings, topic, subscription)
    publisher = RequestPublisher(settings, topic=topic)
    futures = [publisher.publish_raw(r.to_json(), r.attributes()) for r in payloads]
    for future in futures:
        future.result(timeout=120)
    publisher.close()

    n = len(payloads)
    seen: dict[str, float] = {}
    duplicates = 0
    lock = threading.Lock()
    done = threading.Event()

    def callback(message: Any) -> None:
        nonlocal duplicates
        now = time.perf_counter()
        message.ack()
        with lock:
            if message.message_id in seen:
                duplicates += 1
            else:
                seen[message.message_id] = now
                if len(seen) >= n:
                    done.set()

    subscriber = subscriber_client(settings)
    meter = CpuMeter(cpu_pids)
    started = time.perf_counter()
    future = subscriber.subscribe(settings.subscription_path(subscription), callback=callback)
    finished = done.wait(max(60.0, n / 100))
    cpu = meter.stop()
    future.cancel()
    with contextlib.suppress(Exception):
        future.result(timeout=10)
    subscriber.close()
    times = sorted(seen.values())
    if not finished or len(times) < 2:
        raise RuntimeError(f"bare subscriber received {len(times)} of {n}")
    span = times[-1] - times[0]
    return {"messages": n, "rate": (n - 1) / span, "span_s": span, "first_after_s": times[0] - started,
            "duplicates": duplicates, "cpu": cpu}


def paced(count: int, rate: float, action: Callable[[int], None]) -> None:
    start = time.perf_counter()
    for i in range(count):
        target = start + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        action(i)


def phase_bare_latency(settings: Any, payloads: list[Any], rate: float) -> list[float]:
    """(c) baseline: publish -> bare subscriber callback, at the steady rate of the consumer's phase."""
    from infra.clients import subscriber_client
    from publisher.requests import RequestPublisher

    suffix = uuid.uuid4().hex[:8]
    topic, subscription = f"bench-bare-lat-{suffix}", f"bench-bare-lat-{suffix}"
    create_topic_and_subscription(settings, topic, subscription)
    publisher = RequestPublisher(settings, topic=topic)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()

    def callback(message: Any) -> None:
        now = time.time()
        message.ack()
        run_id = message.attributes.get("run_id", "")
        with lock:
            if run_id in sent:
                latencies.append(now - sent.pop(run_id))

    subscriber = subscriber_client(settings)
    future = subscriber.subscribe(settings.subscription_path(subscription), callback=callback)
    time.sleep(1.0)  # stream open

    def publish(i: int) -> None:
        request = payloads[i]
        with lock:
            sent[request.run_id] = time.time()
        publisher.publish_raw(request.to_json(), request.attributes())

    paced(len(payloads), rate, publish)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if len(latencies) >= len(payloads):
                break
        time.sleep(0.1)
    future.cancel()
    with contextlib.suppress(Exception):
        future.result(timeout=10)
    subscriber.close()
    publisher.close()
    return latencies


def summarize(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "p50": _pct(ordered, 50), "p95": _pct(ordered, 95), "max": ordered[-1] if ordered else
            float("nan"), "mean": statistics.fmean(ordered) if ordered else float("nan")}


# ================================================================================================
# py-spy: CPU samples of the consumer process grouped by component
# ================================================================================================
CATEGORIES = (  # first match from the leaf up wins; order matters only for the "self" grouping
    ("logging (structlog render/print)", ("structlog", "observability/logging")),
    ("BigQuery client (google-cloud-bigquery, requests, urllib3, http, ssl, json)",
     ("google/cloud/bigquery", "google/cloud/_http", "requests/", "urllib3/", "http/client", "google/api_core")),
    ("Pub/Sub publisher (events)", ("pubsub_v1/publisher",)),
    ("Pub/Sub subscriber (streaming pull, leaser, dispatcher)", ("pubsub_v1/subscriber",)),
    ("gRPC / protobuf", ("grpc/", "grpc_", "proto/", "protobuf")),
    ("pydantic models / JSON schema", ("pydantic", "jsonschema", "schemas/")),
    ("pipeline executor + config loader", ("pipeline/",)),
    ("consumer (handler, pool, slots, observers)", ("consumer/",)),
    ("tenancy / warehouse (our code)", ("tenancy/", "warehouse/")),
    ("asyncio loop / threads / futures", ("asyncio/", "threading.py", "concurrent/futures", "queue.py")),
)


def pyspy_summary(raw: Path) -> dict[str, Any]:
    total = 0
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        if frames and frames[0].startswith("thread ("):
            threads[frames[0]] += count
            frames = frames[1:]
        matched = set()
        for label, needles in CATEGORIES:
            if any(needle in frame for frame in frames for needle in needles):
                matched.add(label)
        for label in matched:
            inclusive[label] += count
        if frames:
            leaf[frames[-1][:140]] += count
    return {"samples": total, "inclusive": inclusive, "leaf": leaf.most_common(12), "threads": threads.most_common(8)}


def phase_pyspy(consumer: ConsumerUnderTest, completions: Completions, settings: Any, orgs: list[str],
                count: int, workdir: Path) -> dict[str, Any] | None:
    from publisher.requests import RequestPublisher

    pyspy = Path(sys.executable).with_name("py-spy")
    if not pyspy.exists() or consumer.mode != "process":
        print("  py-spy: not installed in the venv (pip install py-spy), or --consumer thread; skipped")
        return None
    raw = workdir / "pyspy.txt"
    requests = build_requests(orgs, count)
    recorder = subprocess.Popen(  # noqa: S603
        [str(pyspy), "record", "--pid", str(consumer.pid), "--rate", "200", "--format", "raw", "--nonblocking",
         "--threads", "--output", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    publisher = RequestPublisher(settings)
    publisher.publish_many(requests)
    publisher.close()
    completions.wait([r.run_id for r in requests], timeout=max(120, count))
    recorder.send_signal(signal.SIGINT)
    try:
        recorder.wait(30)
    except subprocess.TimeoutExpired:
        recorder.kill()
    if not raw.exists():
        print(f"  py-spy produced nothing: {recorder.stderr.read().decode(errors='replace')[:500] if recorder.stderr else ''}")
        return None
    return pyspy_summary(raw)


# ================================================================================================
# Main
# ================================================================================================
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages for (a) and run requests for (b)")
    parser.add_argument("--orgs", type=int, default=8, help="orgs the run requests are spread over")
    parser.add_argument("--workers", type=int, default=8, help="settings.consumer_workers (concurrent runs)")
    parser.add_argument("--per-org", type=int, default=2, help="settings.per_org_concurrency")
    parser.add_argument("--warmup", type=int, default=40, help="runs before RSS 'before' and (b)")
    parser.add_argument("--latency-runs", type=int, default=60)
    parser.add_argument("--latency-rate", type=float, default=0.0,
                        help="requests/s for (c); default: a quarter of the rate measured in (b)")
    parser.add_argument("--consumer", choices=("process", "thread"), default="process")
    parser.add_argument("--no-probe", action="store_true", help="no timing probe in the consumer")
    parser.add_argument("--py-spy", type=int, default=0, metavar="N",
                        help="afterwards, N more runs under py-spy (not part of the figures)")
    parser.add_argument("--log-level", default="INFO", help="consumer log level (logs go to a file)")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    parser.add_argument("--child-consumer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_consumer:
        child_consumer()
        return
    command = "  ".join([".venv/bin/python bench/consume.py", *sys.argv[1:]]).replace("  ", " ")
    results = run(args)
    report = render(results, command)
    print(report)
    if not args.no_write:
        write_section(report)
        print(f"\n(section updated in {RESULTS.relative_to(ROOT)})")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from devstack.stack import LocalStack
    from observability.logging import configure_logging

    configure_logging("WARNING", "json")
    workdir = Path(tempfile.mkdtemp(prefix="bench-consume-"))
    results: dict[str, Any] = {"args": vars(args), "workdir": str(workdir), "load_start": loadavg()}
    with LocalStack() as stack:
        stack.apply_env()
        stage("local stack up")
        from infra.apply import apply
        from infra.topology import Topology
        from publisher.requests import RequestPublisher
        from runtime import Services
        from tenancy.onboarding import onboard_org
        from warehouse.bootstrap import bootstrap

        settings = bench_settings(stack, make_configs_dir(workdir), args)
        services = Services(settings)
        assert bootstrap(services.bigquery, settings).ok
        apply(Topology.from_settings(settings), settings)
        orgs = [f"bench_org_{i:03d}" for i in range(args.orgs)]
        for org in orgs:
            onboard_org(services.bigquery, settings, services.cipher, org, PLAN)
        stage(f"platform ready: {len(orgs)} orgs on plan {PLAN}, workers={args.workers}, per_org={args.per_org}")
        pids = {"bqemulator": find_pid("bqemulator_launcher", f"--port={stack.bigquery.port}"),
                "pubsub emulator (java)": find_pid("java", f"--port={stack.pubsub.port}"),
                "bench process": os.getpid()}

        # (a) bare baseline
        payloads = build_requests(orgs, args.messages)
        results["bare"] = phase_bare(settings, payloads, pids)
        stage(f"(a) bare subscriber: {results['bare']['rate']:.0f} msg/s")

        # (b) the whole consumer
        completions = Completions(settings)
        consumer = ConsumerUnderTest(settings, workdir, args.consumer, probe=not args.no_probe)
        if args.consumer == "process":
            pids["consumer process"] = consumer.pid
        publisher = RequestPublisher(settings)
        try:
            warm = build_requests(orgs, args.warmup)
            publisher.publish_many(warm)
            if completions.wait([r.run_id for r in warm], timeout=180) < len(warm):
                raise RuntimeError(f"warm-up did not complete; consumer log: {consumer.log_path}")
            time.sleep(1.0)
            results["warmup_snapshot"] = consumer.snapshot()
            rss_before = rss_kb(consumer.pid)
            stage(f"consumer warmed up ({args.warmup} runs), RSS {rss_before / 1024:.1f} MiB")

            requests = build_requests(orgs, args.messages)
            run_ids = [r.run_id for r in requests]
            sampler = RssSampler(consumer.pid)
            sampler.start()
            meter = CpuMeter(pids)
            marks: dict[int, int] = {}
            quarter = max(1, args.messages // 4)

            def progress(done: int) -> None:
                for q in (1, 2, 3, 4):
                    if done >= q * quarter and q not in marks:
                        marks[q] = rss_kb(consumer.pid)
                        stage(f"(b) {done}/{args.messages} completed, RSS {marks[q] / 1024:.1f} MiB")

            publish_started = time.perf_counter()
            publisher.publish_many(requests, timeout=300)
            results["publish_backlog_s"] = time.perf_counter() - publish_started
            got = completions.wait(run_ids, timeout=max(300, args.messages * 0.5), progress=progress)
            cpu = meter.stop()
            samples = sampler.stop()
            if got < len(run_ids):
                raise RuntimeError(f"only {got} of {len(run_ids)} runs completed; consumer log: {consumer.log_path}")
            times = completions.times(run_ids)
            span = times[-1] - times[0]
            window = max(2, len(times) // 10)
            first_rate = (window - 1) / max(1e-9, times[window - 1] - times[0])
            last_rate = (window - 1) / max(1e-9, times[-1] - times[-window])
            time.sleep(1.0)
            rss_after = rss_kb(consumer.pid)
            results["consumer"] = {
                "runs": len(times), "rate": (len(times) - 1) / span, "span_s": span, "cpu": cpu,
                "statuses": dict(completions.statuses(run_ids)), "first_decile_rate": first_rate,
                "last_decile_rate": last_rate,
            }
            results["memory"] = {"before_kb": rss_before, "after_kb": rss_after, "quarters_kb": marks,
                                 "peak_kb": max((kb for _, kb in samples), default=0)}
            results["throughput_snapshot"] = consumer.snapshot()
            stage(f"(b) consumer: {results['consumer']['rate']:.1f} runs/s")

            # (c) latency with the consumer otherwise idle, then the bare baseline at the same rate
            time.sleep(2.0)
            latency_requests = build_requests(orgs, args.latency_runs)
            sent: dict[str, float] = {}

            def publish(i: int) -> None:
                request = latency_requests[i]
                sent[request.run_id] = time.time()
                publisher.publish_request(request)

            rate = args.latency_rate or min(50.0, max(0.25, round(results["consumer"]["rate"] / 4, 2)))
            results["latency_rate"] = rate
            paced(len(latency_requests), rate, publish)
            completions.wait(list(sent), timeout=120)
            with completions.lock:
                consumer_latencies = [completions.completed[r][0] - t for r, t in sent.items()
                                      if r in completions.completed]
            results["latency"] = summarize(consumer_latencies)
            results["latency_snapshot"] = consumer.snapshot()
            results["latency_rss_kb"] = rss_kb(consumer.pid)
            stage(f"(c) consumer latency p50 {results['latency']['p50'] * 1000:.0f} ms")
            results["bare_latency"] = summarize(
                phase_bare_latency(settings, build_requests(orgs, args.latency_runs), rate))
            stage(f"(c) bare latency p50 {results['bare_latency']['p50'] * 1000:.1f} ms")

            if args.py_spy:
                results["pyspy"] = phase_pyspy(consumer, completions, settings, orgs, args.py_spy, workdir)
        finally:
            publisher.close()
            results["exit_code"] = consumer.stop()
            completions.close()
            results["event_types"] = dict(completions.event_types)
            results["load_end"] = loadavg()
            services.close()
    return results


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def stage(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


# ================================================================================================
# Report
# ================================================================================================
PER_RUN_ORDER = (
    "handler.handle", "pool.callback_to_handler (hop + slot wait)",
    "bq.has_succeeded", "bq.gate_check", "bq.gate_record_run", "config.load",
    "executor.run (incl. observers)", "observer.RunLogObserver.pipeline_started",
    "observer.EventObserver.pipeline_started", "observer.EventObserver.step_started",
    "observer.EventObserver.step_finished", "observer.RunLogObserver.pipeline_finished",
    "observer.EventObserver.pipeline_finished", "bq.runlog_started", "bq.runlog_finished", "events.publish_event",
    "events.flush",
)


def probe_table(snapshot: dict[str, Any], runs: int) -> list[str]:
    probe = snapshot.get("probe", {})
    lines = [f"{'stage':<46} {'calls/run':>9} {'mean ms':>8} {'p50 ms':>7} {'p95 ms':>7} {'ms/run':>7}"]

    def row(name: str) -> str:
        s = probe[name]
        return (f"{name:<46} {s['count'] / runs:>9.2f} {s['mean_ms']:>8.1f} {s['p50_ms']:>7.1f} {s['p95_ms']:>7.1f} "
                f"{s['total_s'] * 1000 / runs:>7.1f}")

    for name in PER_RUN_ORDER:
        if name in probe:
            lines.append(row(name))
    hops = sorted(n for n in probe if n.startswith("to_thread["))
    for name in hops:
        inner = name[len("to_thread["):-1]
        outer = probe[name]
        own = probe.get(inner)
        hop = (outer["total_s"] - own["total_s"]) / outer["count"] * 1000 if own and own["count"] == outer["count"] \
            else float("nan")
        lines.append(row(name) + f"   hop+queue {hop:.1f} ms/call")
    for name in sorted(n for n in probe if n.startswith("http.")):
        lines.append(row(name))
    for name in ("pubsub.publish_to_callback", "loop.lag"):
        if name in probe:
            s = probe[name]
            lines.append(f"{name:<46} {'':>9} {s['mean_ms']:>8.1f} {s['p50_ms']:>7.1f} {s['p95_ms']:>7.1f} "
                         f"   max {s['max_ms']:.0f} ms, {s['count']} samples")
    return lines


def render(r: dict[str, Any], command: str) -> str:
    bare, cons, mem = r["bare"], r["consumer"], r["memory"]
    lat, blat = r["latency"], r["bare_latency"]
    ratio = cons["rate"] / bare["rate"]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    a = r["args"]
    out = [
        f"Command: `{command}` ({when}; consumer as a separate process unless --consumer thread; "
        f"mode here: {a['consumer']}, workers={a['workers']}, per_org={a['per_org']}, orgs={a['orgs']})",
        "",
        "```",
        f"throughput ratio consumer / bare subscriber : {ratio:.4f}  (x{1 / ratio:.0f} slower; target >= 0.5)",
        f"latency ratio p50 consumer / bare           : x{lat['p50'] / blat['p50']:.0f}   p95: "
        f"x{lat['p95'] / blat['p95']:.0f}",
        f"memory ratio RSS after / before {a['messages']:>6} runs : {mem['after_kb'] / mem['before_kb']:.3f}",
        "",
        f"(a) bare streaming pull, ack only     : {bare['rate']:8.0f} msg/s   ({bare['messages']} msgs, "
        f"{bare['span_s']:.2f} s first->last, {bare['duplicates']} redelivered)",
        f"(b) whole consumer, no-op pipeline    : {cons['rate']:8.1f} runs/s  ({cons['runs']} runs, "
        f"{cons['span_s']:.1f} s first->last pipeline_completed; first/last 10%: {cons['first_decile_rate']:.1f} / "
        f"{cons['last_decile_rate']:.1f} runs/s; statuses {cons['statuses']})",
        f"(c) publish -> pipeline_completed     : p50 {lat['p50'] * 1000:6.0f} ms  p95 {lat['p95'] * 1000:6.0f} ms  "
        f"max {lat['max'] * 1000:.0f} ms  ({lat['n']} runs at {r['latency_rate']:g}/s)",
        f"    bare publish -> callback          : p50 {blat['p50'] * 1000:6.1f} ms  p95 {blat['p95'] * 1000:6.1f} ms  "
        f"({blat['n']} msgs at {r['latency_rate']:g}/s)",
        f"(d) consumer RSS: after warm-up {mem['before_kb'] / 1024:.1f} MiB, at 25/50/75/100% of (b) "
        + " / ".join(f"{mem['quarters_kb'].get(q, 0) / 1024:.1f}" for q in (1, 2, 3, 4))
        + f" MiB, peak {mem['peak_kb'] / 1024:.1f}, after {mem['after_kb'] / 1024:.1f} MiB "
        f"(+{(mem['after_kb'] - mem['before_kb']) / 1024:.1f} MiB); after (c) {r['latency_rss_kb'] / 1024:.1f} MiB",
        "```",
        "",
        "CPU seconds per run during (b) (2 cores; wall = span of the phase):",
        "",
        "```",
    ]
    runs = cons["runs"]
    cpu = cons["cpu"]
    for name, used in cpu.items():
        if name != "wall_s":
            out.append(f"{name:<24} {used / runs * 1000:7.2f} ms/run  ({used / cpu['wall_s'] * 100:5.1f}% of a core)")
    bcpu = bare["cpu"]
    out.append(f"(bare (a): bench process {bcpu['bench process'] / bare['messages'] * 1000:.3f} ms/msg, pubsub emulator "
               f"{bcpu['pubsub emulator (java)'] / bare['messages'] * 1000:.3f} ms/msg)")
    out += ["```", "", f"Per run inside the consumer during (b) ({runs} runs; probe: wall time, reservoir percentiles):",
            "", "```"]
    out += probe_table(r["throughput_snapshot"], runs)
    snap = r["throughput_snapshot"]
    out.append(f"pool stats so far: {snap['pool']}")
    out += ["```", "", f"Per run during (c) (consumer idle otherwise, {lat['n']} runs):", "", "```"]
    out += probe_table(r["latency_snapshot"], max(1, lat["n"]))
    out.append("```")
    if r.get("pyspy"):
        p = r["pyspy"]
        out += ["", f"py-spy (CPU samples of the consumer process, {p['samples']} samples, "
                f"{a['py_spy']} extra runs; a sample counts in every group on its stack):", "", "```"]
        for label, count in sorted(p["inclusive"].items(), key=lambda kv: -kv[1]):
            out.append(f"{count / p['samples'] * 100:5.1f}%  {label}")
        out.append("top leaf frames:")
        for frame, count in p["leaf"]:
            out.append(f"{count / p['samples'] * 100:5.1f}%  {frame}")
        out.append("threads:")
        for thread, count in p["threads"]:
            out.append(f"{count / p['samples'] * 100:5.1f}%  {thread}")
        out.append("```")
    out.append(f"\nEvents seen: {r['event_types']}; consumer exit code {r['exit_code']}. Machine load average "
               f"(1/5/15 min) at start {r['load_start']}, at end {r.get('load_end', '?')} (other sessions share the "
               f"2 cores: compare ratios, not absolute rates).")
    return "\n".join(out)


def write_section(report: str, title: str = "## Consumer throughput, latency, memory (bench/consume.py)") -> None:
    """Replace the generated block between this benchmark's markers; other sections (and notes written
    after the end marker) are kept."""
    body = f"{SECTION_START}\n{report}\n{SECTION_END}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        _, tail = rest.split(SECTION_END, 1)
        text = head + body + tail
    else:
        text = text.rstrip("\n") + f"\n\n{title}\n\n" + body + "\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
