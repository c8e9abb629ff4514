"""Throughput, latency and memory of the whole consumer.

One local stack (Pub/Sub emulator + bqemulator), one run, the same number of messages for each part:

  (a) baseline: a bare streaming-pull subscriber whose callback only acks (library defaults), on its
      own topic/subscription, fed the same run-request payloads; msgs/s from its first to its last callback.
  (b) the whole consumer (ConsumerService: batched admission = succeeded check + org gate + quota count,
      run-log group commit, events) on run requests for
      the one-step no-op pipeline `utility/smoke/noop`, spread round-robin over --orgs orgs, as a backlog;
      run requests/s from the first to the last completion, and its ratio to (a). Completions are counted
      from the consumer's own /metrics (METRICS_PORT; `convergence_outcomes_total{outcome="succeeded"}`,
      polled every 0.1 s); no subscription is attached to the events topic during (b), like (a) which has
      none: the emulator discards the events and neither it nor the bench spends CPU delivering them. Every
      run is checked afterwards (`convergence_runs_total` by status, and one run-log query).
  (c) latency: with the consumer otherwise idle, --latency-runs requests published at a steady
      --latency-rate; publish -> `pipeline_completed` published (Pub/Sub publish time of the event, followed
      through an events subscription created after (b)), p50/p95; baseline: publish -> bare subscriber
      callback at the same rate.
  (d) memory: consumer process RSS after a warm-up, during and after (b) (use --messages 10000 for the
      issue's "memory flat over 10,000 messages").

The consumer runs as its own process by default (as `convergence consume` does in production; the
benchmark's publisher and completion counter do not share its GIL); `--consumer thread` runs it in this
process with devstack.BackgroundConsumer instead. A probe inside the consumer process times each stage
of a run (admission wait and its batched BigQuery lookups, the run-log group commit, BigQuery calls and
their HTTP requests, event publishing, thread hops, slot wait, event loop lag), counts batch sizes, and adds
nothing measurable (a few perf_counter calls per stage). `--py-spy` adds a separate,
unmeasured phase under py-spy (CPU samples of the consumer process, grouped by component).

    .venv/bin/python bench/consume.py [--messages 2000] [--orgs 8] [--workers 8] [--per-org 2]
        [--latency-runs 60] [--latency-rate 5] [--py-spy N] [--whatif threads-32,workers64,...]
        [--label main] [--no-probe] [--no-write]

Figures go to stdout and to this benchmark's section of bench/RESULTS.md (other sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
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
    """Time every stage of a run in this process: admission (the micro-batched succeeded check and org gate)
    and the BigQuery operations under it (and the HTTP requests under those), the run-log group commit,
    event publishing, the thread hops, the executor and its observers, the pool's hand-over to the loop."""
    from google.cloud import _http

    from convergence.consumer import handler as consumer_handler
    from convergence.consumer import observers as consumer_observers
    from convergence.consumer.pool import SubscriberPool

    services = service.services
    handler = service.handler
    admission = handler.admission
    runlog, gate, events = services.runlog, services.gate, services.events
    # admission's worker-thread parts: private, so wrapped where this version of consumer/admission.py has them
    # (_lookup: both lookups in one thread; _succeeded / _read_standings: side by side)
    for attr, name in (("_lookup", "admission.lookup (one per batch)"),
                       ("_succeeded", "admission.succeeded (one per batch)"),
                       ("_read_standings", "admission.standings (per batch with stale orgs)")):
        if callable(getattr(admission, attr, None)):
            probe.wrap(admission, attr, name)
    for owner, attr, name in (
        # admission: one await per run; the batch's lookups run once per batch in worker threads
        (admission, "admit", "admission.admit (batch wait + lookup)"),
        (runlog, "succeeded_among", "bq.succeeded_among"), (gate, "standings", "bq.gate_standings"),
        (runlog, "flush", "bq.runlog_flush"),
        # staging only (write=False): no BigQuery call under these any more
        (runlog, "run_started", "runlog.run_started (stage)"), (runlog, "run_finished", "runlog.run_finished (stage)"),
        (runlog, "record_rejected", "runlog.record_rejected (stage)"),
        (events, "publish_event", "events.publish_event"),
        (service.loader, "load", "config.load"), (handler, "handle", "handler.handle"),
    ):
        probe.wrap(owner, attr, name)
    for cls, hooks in ((consumer_observers.RunLogObserver, ("pipeline_started", "pipeline_finished")),
                       (consumer_observers.EventObserver, ("pipeline_started", "step_started", "step_finished",
                                                           "pipeline_finished"))):
        for hook in hooks:
            probe.wrap(cls, hook, f"observer.{cls.__name__}.{hook}")
    probe.wrap(consumer_handler.Executor, "run", "executor.run (incl. observers)")
    # The run-log group commit as the handler awaits it (after executor.run, before the ack). A proxy, not
    # a class patch: the commits that GroupCommit.soon() starts on its own timer are not a run's wait.
    handler.commit_runlog = _TimedCommit(handler.commit_runlog, probe, "commit_runlog (group commit wait)")

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


class _TimedCommit:
    """handler.commit_runlog with its awaits timed; everything else (soon, drain, flushes) passes through."""

    def __init__(self, commit: Any, probe: Probe, name: str):
        self._commit, self._probe, self._name = commit, probe, name

    async def __call__(self) -> None:
        start = time.perf_counter()
        try:
            await self._commit()
        finally:
            self._probe.add(self._name, time.perf_counter() - start)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._commit, attr)


def batching_counters(service: Any) -> dict[str, int]:
    """Cumulative counters of the hot path's batching (consumer/admission.py, convergence/runtime/batching.py)."""
    handler = service.handler
    admission = handler.admission
    commit = handler.commit_runlog
    commit = getattr(commit, "_commit", commit)  # unwrap the probe's proxy
    out = {"admission batches": admission._batcher.batches, "admission items": admission._batcher.items,
           "runlog commits": commit.flushes, "runlog commit waiters": commit._batcher.items}
    for kind, n in admission.calls.items():
        out[f"admission calls {kind}"] = n
    return out


def consumer_snapshot(service: Any, probe: Probe) -> dict[str, Any]:
    """Figures since the previous snapshot: the probe's (reset by the caller) and the batching counters'."""
    pool = service.pools[0]
    counters = batching_counters(service)
    last = getattr(probe, "last_counters", {})
    probe.last_counters = counters  # type: ignore[attr-defined]
    return {"probe": probe.snapshot(), "pool": dict(vars(pool.stats)), "rss_kb": rss_kb(os.getpid()),
            "bq_calls": service.services.runlog.calls,
            "batching": {name: n - last.get(name, 0) for name, n in counters.items()}}


# ================================================================================================
# The consumer process (this file run with --child-consumer): `convergence consume` plus the probe
# ================================================================================================
def child_consumer() -> None:
    from convergence.consumer.service import ConsumerService
    from convergence.observability.logging import configure_logging
    from convergence.runtime import Services
    from convergence.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, settings.gcp_project_id)
    out = Path(os.environ["BENCH_PROBE_OUT"])
    probe = Probe()
    services = Services(settings)
    service = ConsumerService(settings, services, notify=services.notifier)
    whatifs = [name for name in os.environ.get("BENCH_WHATIF", "").split(",") if name]
    if os.environ.get("BENCH_PROBE", "1") == "1":
        install_probe(service, probe)
    install_whatifs(service, whatifs)
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
        if "threads-32" in whatifs:
            from concurrent.futures import ThreadPoolExecutor

            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32, thread_name_prefix="asyncio"))
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)
        lag = asyncio.create_task(loop_lag(probe))
        try:
            await service.run()  # SIGTERM/SIGINT: drain and stop, as `convergence consume`
        finally:
            lag.cancel()

    asyncio.run(main())


def die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the benchmark process dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


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
    from convergence.settings.model import Settings, load_settings

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
    from convergence.infra.clients import publisher_client, subscriber_client

    publisher = publisher_client(settings)
    subscriber = subscriber_client(settings)
    publisher.create_topic(name=settings.topic_path(topic))
    subscriber.create_subscription(name=settings.subscription_path(subscription),
                                   topic=settings.topic_path(topic), ack_deadline_seconds=60)
    subscriber.close()
    publisher.transport.close()


# ================================================================================================
# Counting completions in (b) from the consumer's /metrics (no events subscription: costs next to nothing)
# ================================================================================================
METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([^ ]+)')
METRIC_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
POLLED = ("convergence_outcomes_total", "convergence_runs_total", "convergence_messages_acked_total")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_metrics(text: str, names: tuple[str, ...] = POLLED) -> Samples:
    """The samples of `names` in a Prometheus text exposition: (name, sorted labels) -> value."""
    out: Samples = {}
    for line in text.splitlines():
        if not line.startswith(names):
            continue
        match = METRIC_LINE.match(line)
        if match is None or match.group(1) not in names:
            continue
        labels = tuple(sorted(METRIC_LABEL.findall(match.group(2) or "")))
        out[(match.group(1), labels)] = float(match.group(3))
    return out


def by_label(samples: Samples, name: str, label: str, **where: str) -> dict[str, float]:
    """{value of `label`: sample} for the samples of `name` whose other labels match `where`."""
    out: dict[str, float] = {}
    for (metric, labels), value in samples.items():
        as_dict = dict(labels)
        if metric == name and all(as_dict.get(k) == v for k, v in where.items()) and label in as_dict:
            out[as_dict[label]] = out.get(as_dict[label], 0.0) + value
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {key: round(value - before.get(key, 0.0)) for key, value in sorted(after.items())
            if round(value - before.get(key, 0.0))}


class MetricsPoller(threading.Thread):
    """Scrapes the consumer's /metrics every `interval` seconds over one kept-alive connection and keeps
    (time, succeeded runs) for its requests subscription. A scrape is one small HTTP request answered on the
    consumer's loop (prometheus_client's text encoder over a few dozen series): no Pub/Sub traffic at all."""

    def __init__(self, port: int, subscription: str, interval: float = 0.1):
        super().__init__(daemon=True, name="metrics-poller")
        self.port, self.subscription, self.interval = port, subscription, interval
        self.lock = threading.Lock()
        self.samples: list[tuple[float, float]] = []  # (perf_counter, succeeded outcomes so far)
        self.latest: Samples = {}
        self.polls = self.errors = 0
        self._conn: http.client.HTTPConnection | None = None
        self._stop_event = threading.Event()
        self._polled = threading.Condition(self.lock)

    def fetch(self) -> Samples | None:
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self._conn.request("GET", "/metrics")
            response = self._conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise http.client.HTTPException(f"HTTP {response.status}")
        except (OSError, http.client.HTTPException):
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return None
        return parse_metrics(body.decode(errors="replace"))

    def succeeded(self, samples: Samples) -> float:
        return by_label(samples, "convergence_outcomes_total", "outcome",
                        subscription=self.subscription).get("succeeded", 0.0)

    def run(self) -> None:
        while not self._stop_event.is_set():
            sent = time.perf_counter()
            samples = self.fetch()
            received = time.perf_counter()
            with self.lock:
                if samples is None:
                    self.errors += 1
                else:
                    # the counters were read somewhere between sending and receiving: take the middle
                    self.samples.append(((sent + received) / 2, self.succeeded(samples)))
                    self.latest = samples
                    self.polls += 1
                self._polled.notify_all()
            self._stop_event.wait(max(0.0, self.interval - (time.perf_counter() - sent)))
        if self._conn is not None:
            self._conn.close()

    def value(self) -> float:
        with self.lock:
            return self.samples[-1][1] if self.samples else 0.0

    def fresh(self, timeout: float = 30) -> Samples:
        """The samples of a scrape sent after this call."""
        with self.lock:
            target = self.polls + 2
            if not self._polled.wait_for(lambda: self.polls >= target, timeout):
                raise RuntimeError(f"no /metrics answer from the consumer on port {self.port}")
            return dict(self.latest)

    def wait_for(self, count: float, timeout: float, progress: Callable[[int], None] | None = None,
                 base: float = 0.0) -> int:
        """Until `count` runs succeeded (absolute counter value); returns how many above `base`."""
        deadline = time.monotonic() + timeout
        while True:
            done = int(self.value() - base)
            if progress:
                progress(done)
            if self.value() >= count or time.monotonic() > deadline:
                return done
            time.sleep(0.1)

    def crossing(self, count: float) -> float:
        """When the counter reached `count`: linear between the last scrape below it and the first at it."""
        with self.lock:
            samples = list(self.samples)
        for i, (when, value) in enumerate(samples):
            if value >= count:
                if i == 0:
                    return when
                before, below = samples[i - 1]
                return before + (when - before) * (count - below) / max(1e-9, value - below)
        raise ValueError(f"the counter never reached {count}")

    def stop(self) -> None:
        self._stop_event.set()
        self.join(15)


# ================================================================================================
# Following pipeline_completed events for (c) and py-spy (Pub/Sub publish times: the follower's own
# speed does not matter). Created after (b), deleted before the next consumer's (b).
# ================================================================================================
class Completions:
    def __init__(self, settings: Any):
        from convergence.infra.clients import subscriber_client

        name = f"bench-events-{uuid.uuid4().hex[:8]}"
        create_subscription_on(settings, name, settings.events_topic)
        self.settings, self.name = settings, name
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
        """Stop following and delete the subscription: the events topic has none left."""
        from convergence.infra.apply import delete_subscription

        self.future.cancel()
        with contextlib.suppress(Exception):
            self.future.result(timeout=10)
        self.subscriber.close()
        delete_subscription(self.name, self.settings)


def events_topic_subscriptions(settings: Any) -> list[str]:
    from convergence.infra.clients import publisher_client

    publisher = publisher_client(settings)
    try:
        return list(publisher.list_topic_subscriptions(topic=settings.topic_path(settings.events_topic)))
    finally:
        publisher.transport.close()


def create_subscription_on(settings: Any, name: str, topic: str) -> None:
    from convergence.infra.clients import subscriber_client

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
                stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)  # noqa: PLW1509
            self.pid = self.process.pid
        else:
            from convergence.devstack.background import BackgroundConsumer
            from convergence.runtime import Services

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
    from convergence.schemas import RunRequest

    return [RunRequest.create(orgs[i % len(orgs)], PIPELINE, requested_by="bench") for i in range(count)]


def phase_bare(settings: Any, payloads: list[Any], cpu_pids: dict[str, int | None]) -> dict[str, Any]:
    """(a) backlog of the same payloads on a fresh topic, then a subscriber that only acks."""
    from convergence.infra.clients import subscriber_client
    from convergence.publisher.requests import RequestPublisher

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
    from convergence.infra.clients import subscriber_client
    from convergence.publisher.requests import RequestPublisher

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
# py-spy: CPU samples (GIL holder) of the consumer process, grouped by component
# ================================================================================================
# A sample goes to the first group matched walking its stack from the innermost frame outwards, so stdlib
# frames (socket, selectors, json, threading) count for the library that called them. py-spy shortens file
# names to the path under site-packages/ or the repo (e.g. "bigquery/job/query.py", "consumer/handler.py").
CATEGORIES = (
    ("bench probe (timing wrappers)", ("consume.py",)),
    ("structlog (log lines)", ("structlog/", "convergence/observability/")),
    ("OpenTelemetry spans (google-cloud-bigquery create_span)", ("opentelemetry/", "trace/", "context/")),
    ("HTTP plumbing (requests, urllib3, http.client, google-auth transport)",
     ("requests/", "urllib3/", "http/", "auth/transport/", "urllib/", "email/")),
    ("google-cloud-bigquery + api_core (jobs, rows, retry)", ("bigquery/", "_http/", "api_core/")),
    ("Pub/Sub publisher client (events)", ("pubsub_v1/publisher/", "pubsub_v1/services/publisher/")),
    ("Pub/Sub subscriber client (stream, leaser, dispatcher, acks)",
     ("pubsub_v1/subscriber/", "pubsub_v1/services/subscriber/")),
    ("gRPC", ("grpc/",)),
    ("protobuf / proto-plus", ("proto/", "protobuf/")),
    ("pydantic / schemas (events, run requests)", ("pydantic/", "pydantic_core/", "schemas/", "jsonschema/")),
    ("pipeline (executor, loader, results)", ("convergence/pipeline/",)),
    ("consumer (handler, admission, pool, slots, observers)", ("consumer/",)),
    ("convergence/runtime/batching.py (MicroBatcher, GroupCommit)", ("convergence/runtime/",)),
    ("tenancy / warehouse (gate, runlog, query building)", ("convergence/tenancy/", "convergence/warehouse/")),
    ("publisher/events.py (EventPublisher)", ("publisher/",)),
    ("asyncio event loop", ("asyncio/",)),
    ("threads, futures, queues", ("threading.py", "concurrent/futures/", "queue.py")),
)
INCLUSIVE = (
    ("RunHandler.handle (consumer/handler.py): a run's own code on the loop", "consumer/handler.py"),
    ("AdmissionControl (consumer/admission.py)", "consumer/admission.py"),
    ("MicroBatcher / GroupCommit (convergence/runtime/batching.py)", "convergence/runtime/batching.py"),
    ("RunLog (convergence/warehouse/runlog.py)", "convergence/warehouse/runlog.py"),
    ("OrgGate (convergence/tenancy/gate.py)", "convergence/tenancy/gate.py"),
    ("QueryRunner (convergence/warehouse/query.py): succeeded_among, standings", "convergence/warehouse/query.py"),
    ("Pub/Sub client (all)", "pubsub_v1/"),
    ("EventPublisher (publisher/events.py)", "publisher/events.py"),
    ("Executor (convergence/pipeline/executor.py)", "convergence/pipeline/executor.py"),
    ("google-cloud-bigquery", "bigquery/"),
    ("OpenTelemetry", "opentelemetry/"),
    ("structlog", "structlog/"),
)


def _frame_path(frame: str) -> str:
    start = frame.rfind("(")
    return frame[start + 1:] if start >= 0 else frame


def pyspy_summary(raw: Path) -> dict[str, Any]:
    total = 0
    own: Counter[str] = Counter()
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
            name = frames[0].split(": ", 1)[-1].rstrip(")")
            threads[name.rstrip("0123456789_") or name] += count
            frames = frames[1:]
        paths = [_frame_path(frame) for frame in frames]
        label = "other"
        for path in reversed(paths):
            found = next((lab for lab, needles in CATEGORIES if path.startswith(needles)), None)
            if found:
                label = found
                break
        own[label] += count
        for lab, needle in INCLUSIVE:
            if any(path.startswith(needle) for path in paths):
                inclusive[lab] += count
        if frames:
            leaf[frames[-1][:120]] += count
    return {"samples": total, "own": own.most_common(), "inclusive": inclusive.most_common(),
            "leaf": leaf.most_common(10), "threads": threads.most_common(8)}


def phase_pyspy(consumer: ConsumerUnderTest, completions: Completions, publisher: Any, orgs: list[str],
                count: int, workdir: Path, rate: int = 100) -> dict[str, Any] | None:
    pyspy = Path(sys.executable).with_name("py-spy")
    if not pyspy.exists() or consumer.mode != "process":
        print("  py-spy: not installed in the venv (pip install py-spy), or --consumer thread; skipped")
        return None
    raw = workdir / "pyspy.txt"
    errors = workdir / "pyspy.err"
    requests = build_requests(orgs, count)
    with errors.open("wb") as err:  # a file, not a pipe: py-spy's messages can never block it
        recorder = subprocess.Popen(  # noqa: S603
            [str(pyspy), "record", "--pid", str(consumer.pid), "--rate", str(rate), "--format", "raw",
             "--nonblocking", "--gil", "--threads", "--output", str(raw)], stdout=subprocess.DEVNULL, stderr=err,
            preexec_fn=die_with_parent)  # noqa: PLW1509
    time.sleep(1.5)
    started = time.perf_counter()
    publisher.publish_many(requests)
    completions.wait([r.run_id for r in requests], timeout=max(120, count))
    elapsed = time.perf_counter() - started
    recorder.send_signal(signal.SIGINT)
    try:
        recorder.wait(30)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.wait(10)
    if not raw.exists():
        error = errors.read_text(errors="replace")[-1500:] if errors.exists() else ""
        print(f"  py-spy produced nothing (exit code {recorder.returncode}): {error}")
        return None
    summary = pyspy_summary(raw)
    summary.update(runs=count, elapsed_s=elapsed, raw=str(raw), rate=rate)
    return summary


# ================================================================================================
# Variants: bench-only what-ifs applied inside the consumer process (BENCH_WHATIF), and settings variants.
# Each is measured in a fresh consumer process after the stock one. (The earlier prototypes gate-cache,
# quota-batch, no-succeeded-check, runlog-group-commit and events-await-own are now the service's own code:
# consumer/admission.py, convergence/runtime/batching.py, consumer/observers.py.)
# ================================================================================================
WHATIFS = {
    "threads-32": "asyncio default executor of 32 threads (default: min(32, cpus + 4) = 6 here)",
    "http-no-trust-env": "BigQuery client's requests session with trust_env = False (no proxy/netrc lookup and "
                         "no scan of os.environ on every HTTP request)",
}
# Settings, not code: name -> (description, settings update from the run's settings).
SETTINGS_VARIANTS: dict[str, tuple[str, Callable[[Any], dict[str, Any]]]] = {
    "wide": ("consumer_workers x4 and per_org_concurrency x4",
             lambda s: {"consumer_workers": min(256, s.consumer_workers * 4),
                        "per_org_concurrency": min(256, s.per_org_concurrency * 4)}),
    "workers64": ("consumer_workers=64, per_org_concurrency=8",
                  lambda s: {"consumer_workers": 64, "per_org_concurrency": 8}),
    "batch-delay-20": ("batch_delay_ms=20 (admission batches and run-log commits gather 20 ms, default 5)",
                       lambda s: {"batch_delay_ms": 20.0}),
    "no-gate-cache": ("gate_cache_seconds=0 (org standings read for every admission batch)",
                      lambda s: {"gate_cache_seconds": 0.0}),
}


def variant_description(part: str) -> str:
    return WHATIFS[part] if part in WHATIFS else f"{SETTINGS_VARIANTS[part][0]} (settings only)"


def install_whatifs(service: Any, names: list[str]) -> None:
    """Instance-level, after the probe. (threads-32 is applied in child_consumer's event loop.)"""
    if "http-no-trust-env" in names:
        service.services.bigquery._http.trust_env = False


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
    parser.add_argument("--window", type=int, default=500,
                        help="(b): keep this many run requests published and not completed (0: the whole "
                             "backlog at once; the emulator then redelivers messages held over ~5 min)")
    parser.add_argument("--latency-runs", type=int, default=60)
    parser.add_argument("--latency-rate", type=float, default=0.0,
                        help="requests/s for (c); default: a quarter of the rate measured in (b)")
    parser.add_argument("--consumer", choices=("process", "thread"), default="process")
    parser.add_argument("--no-probe", action="store_true", help="no timing probe in the consumer")
    parser.add_argument("--py-spy", type=int, default=0, metavar="N",
                        help="afterwards, N more runs under py-spy (not part of the figures)")
    parser.add_argument("--py-spy-rate", type=int, default=100, metavar="HZ", help="py-spy samples per second")
    parser.add_argument("--whatif", default="", metavar="LIST",
                        help=f"comma-separated variants to measure after the stock consumer, each in a fresh "
                             f"consumer process: {', '.join([*WHATIFS, *SETTINGS_VARIANTS])}, or A+B for a "
                             f"combination")
    parser.add_argument("--whatif-messages", type=int, default=0, help="run requests per what-if (default: --messages)")
    parser.add_argument("--log-level", default="INFO", help="consumer log level (logs go to a file)")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    parser.add_argument("--label", default="main",
                        help="which block of this benchmark's RESULTS.md section the figures replace")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs, probe dumps, py-spy output")
    parser.add_argument("--child-consumer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_consumer:
        child_consumer()
        return
    for name in [n for n in args.whatif.split(",") if n]:
        known = {*WHATIFS, *SETTINGS_VARIANTS}
        unknown = [part for part in name.split("+") if part not in known]
        if unknown:
            parser.error(f"unknown --whatif {unknown}; known: {', '.join(sorted(known))}")
    if args.whatif and args.consumer != "process":
        parser.error("--whatif needs --consumer process")
    # SIGTERM (timeout, kill): unwind so the consumer, the emulators and py-spy are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = " ".join([".venv/bin/python bench/consume.py", *sys.argv[1:]])
    results = run(args)
    report = render(results, command)
    print(report)
    if not args.no_write:
        write_section(report, args.label)
        print(f"\n(section updated in {RESULTS.relative_to(ROOT)})")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import shutil

    from convergence.devstack.stack import LocalStack
    from convergence.observability.logging import configure_logging

    configure_logging("WARNING", "json")
    workdir = Path(tempfile.mkdtemp(prefix="bench-consume-"))
    results: dict[str, Any] = {"args": vars(args), "workdir": str(workdir), "load_start": loadavg(),
                               "variants": {}, "code": code_version()}
    ok = False
    try:
        with LocalStack() as stack:
            stack.apply_env()
            stage("local stack up")
            from convergence.infra.apply import apply, delete_subscription
            from convergence.infra.topology import Topology
            from convergence.publisher.requests import RequestPublisher
            from convergence.runtime import Services
            from convergence.tenancy.onboarding import onboard_org
            from convergence.warehouse.bootstrap import bootstrap

            settings = bench_settings(stack, make_configs_dir(workdir), args)
            services = Services(settings)
            assert bootstrap(services.bigquery, settings).ok
            apply(Topology.from_settings(settings), settings)
            # Each consumer process gets its own requests subscription (see own_requests_subscription).
            delete_subscription(settings.requests_subscription, settings)
            orgs = [f"bench_org_{i:03d}" for i in range(args.orgs)]
            for org in orgs:
                onboard_org(services.bigquery, settings, services.cipher, org, PLAN)
            stage(f"platform ready: {len(orgs)} orgs on plan {PLAN}, workers={args.workers}, per_org={args.per_org}")
            pids = {"bqemulator": find_pid("bqemulator", f"--port={stack.bigquery.port}"),
                    "pubsub emulator (java)": find_pid("java", f"--port={stack.pubsub.port}"),
                    "bench process": os.getpid()}

            # (a) bare baseline
            results["bare"] = phase_bare(settings, build_requests(orgs, args.messages), pids)
            stage(f"(a) bare subscriber: {results['bare']['rate']:.0f} msg/s")

            publisher = RequestPublisher(settings)
            event_types: Counter[str] = Counter()
            try:
                variants = ["stock"] + [n for n in args.whatif.split(",") if n]
                for variant in variants:
                    count = args.messages if variant == "stock" else (args.whatif_messages or args.messages)
                    try:
                        results["variants"][variant] = measure_consumer(
                            settings, workdir, args, variant, count, orgs, event_types, publisher, pids,
                            services.runlog, latency_rate=results.get("latency_rate"))
                    except Exception as error:  # a broken prototype must not lose the other figures
                        if variant == "stock":
                            raise
                        results["variants"][variant] = {"error": f"{type(error).__name__}: {error}"}
                        stage(f"[{variant}] failed: {error}")
                        continue
                    if variant == "stock":
                        results["latency_rate"] = results["variants"]["stock"]["latency_rate"]
                # (c) baseline: the bare subscriber at the same steady rate
                results["bare_latency"] = summarize(phase_bare_latency(
                    settings, build_requests(orgs, args.latency_runs), results["latency_rate"]))
                stage(f"(c) bare latency p50 {results['bare_latency']['p50'] * 1000:.1f} ms")
            finally:
                publisher.close()
                results["event_types"] = dict(event_types)
                results["load_end"] = loadavg()
                services.close()
        ok = True
    finally:
        if ok and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"(logs and probe files kept in {workdir})")
    return results


def measure_consumer(settings: Any, workdir: Path, args: argparse.Namespace, variant: str, count: int,
                     orgs: list[str], event_types: Counter[str], publisher: Any, pids: dict[str, int | None],
                     runlog: Any, latency_rate: float | None) -> dict[str, Any]:
    """(b), (c) and (d) for one consumer process (the stock service, or one with what-if prototypes).

    The warm-up and (b) count completions from the consumer's /metrics, with no subscription on the events
    topic (as in (a), the only Pub/Sub traffic is the requests and their acks, plus the events the consumer
    publishes, which the emulator drops). The events follower that (c) and py-spy need is created after (b)
    and deleted before this returns, so the next consumer's (b) runs without it too."""
    vdir = workdir / variant.replace("+", "_")
    vdir.mkdir()
    settings = own_requests_subscription(settings, variant)
    settings = settings.model_copy(update={"metrics_port": free_port()})
    parts = [] if variant == "stock" else variant.split("+")
    for part in parts:
        if part in SETTINGS_VARIANTS:  # settings_env() passes them to the consumer process
            settings = settings.model_copy(update=SETTINGS_VARIANTS[part][1](settings))
    out_settings = {name: getattr(settings, name) for name in REPORTED_SETTINGS}
    if parts:
        os.environ["BENCH_WHATIF"] = ",".join(part for part in parts if part in WHATIFS)
    try:
        consumer = ConsumerUnderTest(settings, vdir, args.consumer, probe=not args.no_probe)
    finally:
        os.environ.pop("BENCH_WHATIF", None)
    pids = {**pids, "consumer process": consumer.pid} if args.consumer == "process" else dict(pids)
    out: dict[str, Any] = {"messages": count, "settings": out_settings}
    poller = MetricsPoller(settings.metrics_port, settings.requests_subscription)
    poller.start()
    completions: Completions | None = None
    try:
        warm = build_requests(orgs, args.warmup)
        publisher.publish_many(warm)
        if poller.wait_for(args.warmup, timeout=120) < args.warmup:
            raise RuntimeError(f"warm-up did not complete (metrics port {settings.metrics_port}, "
                               f"{poller.polls} scrapes, {poller.errors} failed); consumer log: {consumer.log_path}")
        time.sleep(1.0)
        consumer.snapshot()  # drop the warm-up's figures
        rss_before = rss_kb(consumer.pid)
        bq_rss_before = rss_kb(pids["bqemulator"] or 0)
        stage(f"[{variant}] consumer warmed up ({args.warmup} runs), RSS {rss_before / 1024:.1f} MiB")

        # (b) throughput on a backlog; completions from /metrics, nothing subscribed to the events topic
        attached = events_topic_subscriptions(settings)
        if attached:
            raise RuntimeError(f"subscriptions on the events topic before (b): {attached}")
        requests = build_requests(orgs, count)
        before = poller.fresh()
        base = poller.succeeded(before)
        polls_before = poller.polls
        sampler = RssSampler(consumer.pid)
        sampler.start()
        meter = CpuMeter(pids)
        marks: dict[int, int] = {}
        quarter = max(1, count // 4)

        def progress(done: int) -> None:
            for q in (1, 2, 3, 4):
                if done >= q * quarter and q not in marks:
                    marks[q] = rss_kb(consumer.pid)
                    stage(f"[{variant}] (b) {done}/{count} completed, RSS {marks[q] / 1024:.1f} MiB")

        if args.window <= 0 or args.window >= count:
            publisher.publish_many(requests, timeout=300)
            got = poller.wait_for(base + count, timeout=max(600, count * 1.0), progress=progress, base=base)
        else:
            got = feed(publisher, poller, requests, args.window, base, timeout=max(600, count * 1.0),
                       progress=progress)
        cpu = meter.stop()
        samples = sampler.stop()
        polls = poller.polls - polls_before
        if got < count:
            raise RuntimeError(f"only {got} of {count} runs completed; consumer log: {consumer.log_path}")
        after = poller.fresh()
        first, last = poller.crossing(base + 1), poller.crossing(base + count)
        span = last - first
        window = max(2, count // 10)
        runs_by_status = functools.partial(by_label, name="convergence_runs_total", label="status", pipeline=PIPELINE)
        outcomes = functools.partial(by_label, name="convergence_outcomes_total", label="outcome",
                                     subscription=settings.requests_subscription)
        out["throughput"] = {
            "runs": count, "rate": (count - 1) / span, "span_s": span, "cpu": cpu,
            "statuses": delta(runs_by_status(after), runs_by_status(before)),
            "outcomes": delta(outcomes(after), outcomes(before)),
            "first_decile_rate": (window - 1) / max(1e-9, poller.crossing(base + window) - first),
            "last_decile_rate": (window - 1) / max(1e-9, last - poller.crossing(base + count - window + 1)),
            "polls": polls, "poll_interval_s": poller.interval, "events_subscriptions": len(attached),
        }
        time.sleep(1.0)
        out["memory"] = {"before_kb": rss_before, "after_kb": rss_kb(consumer.pid), "quarters_kb": marks,
                         "peak_kb": max((kb for _, kb in samples), default=0), "bq_before_kb": bq_rss_before,
                         "bq_after_kb": rss_kb(pids["bqemulator"] or 0)}
        out["throughput_snapshot"] = consumer.snapshot()
        out["throughput"]["runlog_succeeded"] = runlog_succeeded(runlog, requests)  # after (b)'s measurements
        stage(f"[{variant}] (b) {out['throughput']['rate']:.1f} runs/s; {out['throughput']['statuses']}; run log: "
              f"{out['throughput']['runlog_succeeded']}/{count} SUCCESS")

        # The events follower for (c) and py-spy, from now on (its stream opens while the consumer settles).
        completions = Completions(settings)

        # (c) latency at a steady moderate rate, consumer otherwise idle: first let it settle (with a
        # backlog held longer than ~5 min the emulator redelivers copies, handled as duplicates at the end)
        out["settle"] = settle(consumer)
        rate = latency_rate or args.latency_rate or min(50.0, max(0.25, round(out["throughput"]["rate"] / 4, 2)))
        out["latency_rate"] = rate
        latency_requests = build_requests(orgs, args.latency_runs)
        sent: dict[str, float] = {}

        def publish(i: int) -> None:
            request = latency_requests[i]
            sent[request.run_id] = time.time()
            publisher.publish_request(request)

        paced(len(latency_requests), rate, publish)
        completions.wait(list(sent), timeout=300)
        with completions.lock:
            latencies = [completions.completed[r][0] - t for r, t in sent.items() if r in completions.completed]
        out["latency"] = summarize(latencies)
        out["latency_snapshot"] = consumer.snapshot()
        out["latency_rss_kb"] = rss_kb(consumer.pid)
        stage(f"[{variant}] (c) publish -> pipeline_completed p50 {out['latency']['p50'] * 1000:.0f} ms")

        if args.py_spy and variant == "stock":
            out["pyspy"] = phase_pyspy(consumer, completions, publisher, orgs, args.py_spy, vdir, args.py_spy_rate)
    finally:
        poller.stop()
        if completions is not None:
            event_types.update(completions.event_types)
            with contextlib.suppress(Exception):
                completions.close()
        out["exit_code"] = consumer.stop()
        with contextlib.suppress(OSError):
            out["log_lines"] = sum(1 for _ in consumer.log_path.open("rb"))
        from convergence.infra.apply import delete_subscription

        with contextlib.suppress(Exception):
            delete_subscription(settings.requests_subscription, settings)
    return out


def runlog_succeeded(runlog: Any, requests: list[Any], chunk: int = 1000) -> int:
    """How many of these runs have a SUCCESS row in the run log (a few queries, after the measurement)."""
    pairs = [(r.org_slug, r.run_id) for r in requests]
    return sum(len(runlog.succeeded_among(pairs[i:i + chunk])) for i in range(0, len(pairs), chunk))


def feed(publisher: Any, poller: MetricsPoller, requests: list[Any], window: int, base: float, timeout: float,
         progress: Callable[[int], None]) -> int:
    """Keep `window` run requests published and not yet completed (completed: the consumer's succeeded count
    above `base`): the consumer is never short of work, and no message waits in the client's flow-control
    queue long enough for the emulator to redeliver it."""
    deadline = time.monotonic() + timeout
    sent = 0
    while True:
        done = int(poller.value() - base)
        progress(done)
        if done >= len(requests) or time.monotonic() > deadline:
            return done
        room = window - (sent - done)
        if room > 0 and sent < len(requests):
            chunk = requests[sent:sent + room]
            publisher.publish_many(chunk, timeout=300)
            sent += len(chunk)
        time.sleep(0.1)


def settle(consumer: ConsumerUnderTest, quiet: float = 5.0, timeout: float = 300.0) -> dict[str, Any]:
    """Wait until the consumer has received nothing new for `quiet` seconds; what it did meanwhile
    (redelivered copies handled as duplicates) is returned, not mixed into (c)."""
    start = time.monotonic()
    first = last = consumer.snapshot()
    merged: dict[str, Any] = {"handled": 0}
    still_since = time.monotonic()
    while time.monotonic() - start < timeout:
        time.sleep(1.0)
        now = consumer.snapshot()
        merged["handled"] += now["probe"].get("handler.handle", {}).get("count", 0)
        if now["pool"]["received"] != last["pool"]["received"]:
            still_since = time.monotonic()
        last = now
        if time.monotonic() - still_since >= quiet:
            break
    merged["received"] = last["pool"]["received"] - first["pool"]["received"]
    merged["seconds"] = time.monotonic() - start
    return merged


def own_requests_subscription(settings: Any, variant: str) -> Any:
    """A fresh requests subscription (same topic, retry and dead-letter policy) for each consumer process.

    The Pub/Sub emulator (0.8.20) keeps handing messages to a streaming pull that was closed: a new
    subscriber on the same subscription then gets part of the messages only after the ack deadline.
    Measured here: 10 messages published after re-subscribing -> 6 within 120 s. A fresh subscription
    per consumer keeps every variant's figures clean."""
    from dataclasses import replace

    from convergence.infra.apply import ensure_subscription
    from convergence.infra.topology import Topology

    name = f"{settings.requests_subscription}-{variant.replace('+', '-')[:40]}-{uuid.uuid4().hex[:4]}"
    spec = replace(Topology.from_settings(settings).subscription(settings.requests_subscription), name=name)
    ensure_subscription(spec, settings)
    return settings.model_copy(update={"requests_subscription": name})


def code_version() -> str:
    """The commit measured, and the service files that differ from it (bench/ aside)."""
    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,  # noqa: S603, S607
                                  timeout=30).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "--short", "HEAD") or "?"
    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
             if not line[3:].startswith("bench/")]
    return f"commit {commit}" + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (clean tree)")


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
# A run, in order: admission (shared batches) -> config -> executor + observers -> group commit -> ack.
# Batched work (admission lookups, bq.*, the run-log flush) runs once per batch or commit:
# its calls/run < 1 shows the batching, its ms/run each run's share.
PER_RUN_ORDER = (
    "handler.handle", "pool.callback_to_handler (hop + slot wait)",
    "admission.admit (batch wait + lookup)", "admission.lookup (one per batch)", "admission.succeeded (one per batch)",
    "admission.standings (per batch with stale orgs)", "bq.succeeded_among",
    "bq.gate_standings", "config.load",
    "executor.run (incl. observers)", "observer.RunLogObserver.pipeline_started",
    "observer.EventObserver.pipeline_started", "observer.EventObserver.step_started",
    "observer.EventObserver.step_finished", "observer.RunLogObserver.pipeline_finished",
    "observer.EventObserver.pipeline_finished", "runlog.run_started (stage)", "runlog.run_finished (stage)",
    "runlog.record_rejected (stage)", "events.publish_event",
    "commit_runlog (group commit wait)", "bq.runlog_flush",
)
REPORTED_SETTINGS = ("consumer_workers", "per_org_concurrency", "batch_delay_ms", "gate_cache_seconds")


def probe_table(snapshot: dict[str, Any], runs: int) -> list[str]:
    probe = snapshot.get("probe", {})
    lines = [f"{'stage (wall time)':<50} {'calls/run':>9} {'mean ms':>8} {'p50 ms':>7} {'p95 ms':>7} {'ms/run':>7}"]

    def row(name: str) -> str:
        s = probe[name]
        return (f"{name:<50} {s['count'] / runs:>9.2f} {s['mean_ms']:>8.1f} {s['p50_ms']:>7.1f} {s['p95_ms']:>7.1f} "
                f"{s['total_s'] * 1000 / runs:>7.1f}")

    for name in PER_RUN_ORDER:
        if name in probe:
            lines.append(row(name))
    for name in sorted(n for n in probe if n.startswith(("bq.", "admission.", "runlog.")) and n not in PER_RUN_ORDER):
        lines.append(row(name))
    for name in sorted(n for n in probe if n.startswith("to_thread[")):
        inner = probe.get(name[len("to_thread["):-1])
        outer = probe[name]
        hop = ((outer["total_s"] - inner["total_s"]) / outer["count"] * 1000
               if inner and inner["count"] == outer["count"] else float("nan"))
        lines.append(row(name) + f"  hop+queue {hop:.1f} ms")
    http = [n for n in probe if n.startswith("http.")]
    for name in sorted(http):
        lines.append(row(name))
    if http:
        total = sum(probe[n]["count"] for n in http) / runs
        lines.append(f"{'BigQuery HTTP requests per run':<50} {total:>9.2f}")
    for name in ("pubsub.publish_to_callback", "loop.lag"):
        if name in probe:
            s = probe[name]
            lines.append(f"{name:<50} {'':>9} {s['mean_ms']:>8.1f} {s['p50_ms']:>7.1f} {s['p95_ms']:>7.1f}"
                         f"  max {s['max_ms']:.0f} ms ({s['count']} samples)")
    lines += batching_lines(snapshot.get("batching", {}), runs)
    return lines


def batching_lines(b: dict[str, int], runs: int) -> list[str]:
    if not b:
        return []
    out = []
    batches, commits = b.get("admission batches", 0), b.get("runlog commits", 0)
    if batches:
        out.append(f"admission: {batches} batches, {b.get('admission items', 0) / batches:.1f} requests per batch; "
                   f"succeeded_among {b.get('admission calls succeeded_among', 0)}, standings "
                   f"{b.get('admission calls standings', 0)} calls ({runs} runs)")
    if commits:
        waiters = b.get("runlog commit waiters", 0)
        out.append(f"run-log group commit: {commits} commits (flushes), {waiters / commits:.1f} waiters per commit, "
                   f"{runs / commits:.1f} runs per commit")
    return out


def _http_per_run(snapshot: dict[str, Any], runs: int) -> float | None:
    probe = snapshot.get("probe", {})
    http = [s["count"] for n, s in probe.items() if n.startswith("http.")]
    return sum(http) / runs if http else None


def _mib(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def render(r: dict[str, Any], command: str) -> str:
    a = r["args"]
    bare, blat = r["bare"], r["bare_latency"]
    stock = r["variants"]["stock"]
    cons, mem, lat = stock["throughput"], stock["memory"], stock["latency"]
    ratio = cons["rate"] / bare["rate"]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    q = mem["quarters_kb"]
    st = stock.get("settings", {})
    target = "meets it" if ratio >= 0.5 else f"x{0.5 / ratio:.1f} short"
    out = [
        f"Command: `{command}` ({when}). Consumer: {a['consumer']} mode (its own process = as `convergence "
        f"consume` runs), --workers {a['workers']} --per-org {a['per_org']} --orgs {a['orgs']} (settings: "
        + ", ".join(f"{k}={v}" for k, v in st.items())
        + f"), no-op pipeline `{PIPELINE}`; service code {r.get('code', '?')}; probe "
        f"{'off' if a['no_probe'] else 'on'}; bqemulator time-travel snapshots off (the launcher's default).",
        "",
        "```",
        f"throughput  consumer / bare subscriber      : {ratio:.4f}   (target >= 0.5: {target})",
        f"latency     p50 / p95, consumer / bare      : x{lat['p50'] / blat['p50']:.1f} / "
        f"x{lat['p95'] / blat['p95']:.1f}",
        f"memory      consumer RSS after / before     : {mem['after_kb'] / mem['before_kb']:.3f}   "
        f"(over {cons['runs']} runs)",
        "",
        f"(a) bare streaming pull, ack only    : {bare['rate']:8.0f} msg/s   ({bare['messages']} msgs, "
        f"{bare['span_s']:.2f} s first->last callback, {bare['duplicates']} redelivered)",
        f"(b) whole consumer, no-op pipeline   : {cons['rate']:8.2f} runs/s  ({cons['runs']} runs in "
        f"{cons['span_s']:.1f} s first->last completion; first/last 10%: {cons['first_decile_rate']:.1f} / "
        f"{cons['last_decile_rate']:.1f} runs/s; {cons['statuses']}, run log {cons.get('runlog_succeeded', '?')}/"
        f"{cons['runs']} SUCCESS)",
        "    (b) completions counted from the consumer's /metrics; no subscription on the events topic during (b), "
        "like (a) which has none",
        f"    (convergence_outcomes_total{{outcome=\"succeeded\"}} scraped every "
        f"{cons.get('poll_interval_s', 0.1):g} s, "
        f"{cons.get('polls', '?')} scrapes, times interpolated between scrapes; outcomes {cons.get('outcomes', '?')}; "
        f"events-topic subscriptions at the start of (b): {cons.get('events_subscriptions', '?')})",
        f"(c) publish -> pipeline_completed    : p50 {lat['p50'] * 1000:6.0f} ms  p95 {lat['p95'] * 1000:6.0f} ms  "
        f"max {lat['max'] * 1000:.0f} ms  ({lat['n']} runs at {stock['latency_rate']:g}/s)",
        f"    bare publish -> callback         : p50 {blat['p50'] * 1000:6.1f} ms  p95 {blat['p95'] * 1000:6.1f} ms  "
        f"({blat['n']} msgs at {r['latency_rate']:g}/s)",
        f"(d) consumer RSS MiB: after warm-up {_mib(mem['before_kb'])}; at 25/50/75/100% of (b) "
        + " / ".join(_mib(q.get(k, q.get(str(k), 0))) for k in (1, 2, 3, 4))
        + f"; peak {_mib(mem['peak_kb'])}; after {_mib(mem['after_kb'])} "
        f"({(mem['after_kb'] - mem['before_kb']) / 1024:+.1f}); after (c) {_mib(stock['latency_rss_kb'])}",
        f"    bqemulator RSS MiB over (b): {mem['bq_before_kb'] / 1024:.0f} -> {mem['bq_after_kb'] / 1024:.0f}",
        f"(b) fed with a window of {a['window'] or 'all'} requests outstanding; after (b) the consumer received "
        f"{stock['settle']['received']} more messages (redelivered copies) before going quiet",
        "```",
        "",
        "CPU per run during (b), by process (2 cores shared with other sessions; % of one core over the phase):",
        "",
        "```",
    ]
    runs = cons["runs"]
    cpu = cons["cpu"]
    for name, used in cpu.items():
        if name != "wall_s":
            out.append(f"{name:<24} {used / runs * 1000:7.2f} ms/run  ({used / cpu['wall_s'] * 100:5.1f}% of a core)")
    bcpu = bare["cpu"]
    out.append(f"bare (a) for comparison: subscriber process {bcpu['bench process'] / bare['messages'] * 1000:.3f} "
               f"ms/msg, pubsub emulator {bcpu['pubsub emulator (java)'] / bare['messages'] * 1000:.3f} ms/msg")
    # What the machine allows: the emulators and the bench process (publishing, scraping /metrics) share the
    # cores with the consumer. Even a consumer that cost no CPU could not run faster than this.
    others = sum(used for name, used in cpu.items() if name not in ("wall_s", "consumer process")) / runs
    cores = os.cpu_count() or 1
    if others > 0:
        ceiling = cores / others
        out.append(f"ceiling: the other processes need {others * 1000:.2f} ms CPU per run; on {cores} cores a "
                   f"consumer costing nothing would reach {ceiling:.0f} runs/s = ratio {ceiling / bare['rate']:.2f}")
    all_runs = max(1, runs + a["warmup"] + lat["n"] + a["py_spy"])
    out.append(f"consumer log lines per run: {stock.get('log_lines', 0) / all_runs:.1f}")
    http_per_run = _http_per_run(stock["throughput_snapshot"], runs)
    if http_per_run is not None:
        out.append(f"BigQuery HTTP requests per run during (b): {http_per_run:.3f}")
    if a["no_probe"]:
        b = stock["throughput_snapshot"].get("batching", {})
        out += batching_lines(b, runs)
        out.append("```")
    else:
        out += ["```", "", f"Inside the consumer during (b) ({runs} runs, backlog, {st.get('consumer_workers', '?')} "
                "workers busy; rows after `commit_runlog` and the admission lookup are per batch/commit, counted per "
                "run):", "", "```"]
        out += probe_table(stock["throughput_snapshot"], runs)
        out.append(f"pool stats: {stock['throughput_snapshot']['pool']}")
        out += ["```", "",
                f"Inside the consumer during (c) ({lat['n']} runs at {stock['latency_rate']:g}/s, otherwise idle):",
                "", "```"]
        out += probe_table(stock["latency_snapshot"], max(1, lat["n"]))
        out.append("```")
    p = stock.get("pyspy")
    if p:
        rate = p.get("rate", 100)
        cpu_ms = p["samples"] * 1000 / rate / p["runs"]  # GIL holder only
        out += ["", f"py-spy --gil, {p['runs']} further runs on a backlog ({p['samples']} samples at {rate} Hz = "
                f"{cpu_ms:.1f} ms of GIL-holding Python per run). Own time by component (innermost matching frame):",
                "", "```"]
        for label, count in p["own"]:
            out.append(f"{count / p['samples'] * 100:5.1f}%  {label}")
        out.append("inclusive (anywhere on the stack):")
        for label, count in p["inclusive"]:
            out.append(f"{count / p['samples'] * 100:5.1f}%  {label}")
        out.append("innermost frames (top 8):")
        for frame, count in p.get("leaf", [])[:8]:
            out.append(f"{count / p['samples'] * 100:5.1f}%  {frame}")
        out.append("threads holding the GIL:")
        for thread, count in p["threads"]:
            out.append(f"{count / p['samples'] * 100:5.1f}%  {thread}")
        out.append("```")
    others = [v for v in r["variants"] if v != "stock"]
    if others:
        out += ["", "Variants (each in a fresh consumer process, same stack, same run; what-ifs are bench-only "
                "monkeypatches, the service code is unchanged):", "", "```",
                f"{'variant':<26} {'runs/s':>7} {'x stock':>7} {'/ bare':>7} {'p50 ms':>7} {'p95 ms':>7} "
                f"{'BQ HTTP/run':>11}   CPU ms/run: {'bqemu':>6} {'pubsub':>6} {'consumer':>8}"]
        for name in ["stock", *others]:
            v = r["variants"][name]
            if "error" in v:
                out.append(f"{name:<26} failed: {v['error'][:200]}")
                continue
            t, lv = v["throughput"], v["latency"]
            http = _http_per_run(v["throughput_snapshot"], t["runs"])
            http = float("nan") if http is None else http
            bq_cpu = t["cpu"]["bqemulator"] / t["runs"] * 1000
            ps_cpu = t["cpu"]["pubsub emulator (java)"] / t["runs"] * 1000
            c_cpu = t["cpu"].get("consumer process", 0.0) / t["runs"] * 1000
            out.append(f"{name:<26} {t['rate']:7.2f} {t['rate'] / cons['rate']:7.2f} {t['rate'] / bare['rate']:7.4f} "
                       f"{lv['p50'] * 1000:7.0f} {lv['p95'] * 1000:7.0f} {http:11.2f}               {bq_cpu:6.1f} "
                       f"{ps_cpu:6.1f} {c_cpu:8.1f}")
        out.append("```")
        out.append("")
        for name in others:
            out.append(f"- `{name}`: " + "; ".join(variant_description(part) for part in name.split("+")))
    out.append(f"\nEvents seen by the follower (after (b) only: (c) and py-spy): {r['event_types']}; "
               f"consumer exit code {stock['exit_code']}. Load average "
               f"(1/5/15 min) at start {r['load_start']}, at end {r.get('load_end', '?')}: other sessions share "
               f"the 2 cores, compare ratios, not absolute rates.")
    return "\n".join(out)


def write_section(report: str, label: str) -> None:
    """This benchmark's section of bench/RESULTS.md holds one generated block per --label (replaced on
    re-run) followed by hand-written notes; other sections of the file are kept as they are."""
    title = "## Consumer throughput, latency, memory (bench/consume.py)"
    start, end = f"<!-- bench/consume.py:{label}:start -->", f"<!-- bench/consume.py:{label}:end -->"
    block = f"{start}\n{report}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    elif title in text:
        head, section = text.split(title, 1)
        next_section = section.find("\n## ")
        body, tail = (section, "") if next_section < 0 else (section[:next_section], section[next_section:])
        last_end = body.rfind(":end -->")
        if last_end >= 0:
            cut = body.index("-->", last_end) + 3
            body = body[:cut] + "\n\n" + block + body[cut:]
        else:
            body = "\n\n" + block + body
        text = head + title + body + tail
    else:
        text = text.rstrip("\n") + f"\n\n{title}\n\n{block}\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
