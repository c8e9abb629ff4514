"""Load generation on the local stack: the platform (settings, configs, orgs), run requests, the bare
subscriber baselines, the backlog feeder, the steady-rate publisher and the events follower."""

from __future__ import annotations

import contextlib
import math
import shutil
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.consume import PIPELINE, PLAN, ROOT
from convergence.settings.model import pubsub_resource_fields

PUBSUB_NAME_FIELDS = pubsub_resource_fields()


def make_configs_dir(root: Path) -> Path:
    """A copy of the repo's configs (the loader refuses paths resolving outside its directory: no symlinks)
    whose setup/plans.yml adds a BENCH plan whose quotas never stop a run."""
    import yaml

    configs = root / "configs"
    shutil.copytree(ROOT / "configs", configs)
    plans_path = configs / "setup" / "plans.yml"
    plans = yaml.safe_load(plans_path.read_text())
    plans["plans"][PLAN] = {"daily_pipeline_runs": 100_000_000, "monthly_pipeline_runs": 1_000_000_000,
                            "concurrent_pipelines": 1000}
    plans_path.write_text(yaml.safe_dump(plans, sort_keys=False))
    return configs


def bench_settings(stack: Any, configs: Path, workers: int, per_org: int, log_level: str) -> Any:
    from convergence.settings.model import Settings, load_settings

    suffix = uuid.uuid4().hex[:8]
    names = {name: f"{Settings.model_fields[name].default}-bench-{suffix}" for name in PUBSUB_NAME_FIELDS}
    return load_settings(
        pubsub_emulator_host=stack.pubsub.host, bigquery_emulator_host=stack.bigquery.host,
        gcp_project_id=stack.project, environment="local", central_dataset=f"bench_{suffix}",
        configs_dir=configs, local_keyring_path=configs.parent / "keyring.key",
        consumer_workers=workers, per_org_concurrency=per_org, log_level=log_level,
        log_format="json", shutdown_grace_seconds=10, **names,
    )


def own_requests_subscription(settings: Any) -> Any:
    """A fresh requests subscription (same topic, retry and dead-letter policy) for the consumer process:
    the Pub/Sub emulator keeps handing messages to closed streaming pulls of a reused subscription."""
    from dataclasses import replace

    from convergence.infra.apply import ensure_subscription
    from convergence.infra.topology import Topology

    name = f"{settings.requests_subscription}-{uuid.uuid4().hex[:4]}"
    spec = replace(Topology.from_settings(settings).subscription(settings.requests_subscription), name=name)
    ensure_subscription(spec, settings)
    return settings.model_copy(update={"requests_subscription": name})


def create_topic_and_subscription(settings: Any, topic: str, subscription: str) -> None:
    from convergence.infra.clients import publisher_client, subscriber_client

    publisher = publisher_client(settings)
    subscriber = subscriber_client(settings)
    publisher.create_topic(name=settings.topic_path(topic))
    subscriber.create_subscription(name=settings.subscription_path(subscription),
                                   topic=settings.topic_path(topic), ack_deadline_seconds=60)
    subscriber.close()
    publisher.transport.close()


def build_requests(orgs: list[str], count: int) -> list[Any]:
    from convergence.schemas import RunRequest

    return [RunRequest.create(orgs[i % len(orgs)], PIPELINE, requested_by="bench") for i in range(count)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summarize(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 50), "p95": pct(values, 95),
            "mean": statistics.fmean(values) if values else math.nan}


def phase_bare(settings: Any, payloads: list[Any], meter_pids: dict[str, int | None]) -> dict[str, Any]:
    """(a) a backlog of the same payloads on a fresh topic, then a subscriber that only acks."""
    from bench.consume.process import CpuMeter
    from convergence.infra.clients import subscriber_client
    from convergence.publisher.requests import RequestPublisher

    suffix = uuid.uuid4().hex[:8]
    topic = subscription = f"bench-bare-{suffix}"
    create_topic_and_subscription(settings, topic, subscription)
    publisher = RequestPublisher(settings, topic=topic)
    for future in [publisher.publish_raw(r.to_json(), r.attributes()) for r in payloads]:
        future.result(timeout=120)
    publisher.close()

    n = len(payloads)
    seen: dict[str, float] = {}
    lock = threading.Lock()
    done = threading.Event()

    def callback(message: Any) -> None:
        now = time.perf_counter()
        message.ack()
        with lock:
            seen.setdefault(message.message_id, now)
            if len(seen) >= n:
                done.set()

    subscriber = subscriber_client(settings)
    meter = CpuMeter(meter_pids)
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
    return {"messages": n, "rate": (n - 1) / span, "span_s": span, "cpu": cpu}


def paced(count: int, rate: float, action: Callable[[int], None]) -> None:
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        action(i)


def phase_bare_latency(settings: Any, payloads: list[Any], rate: float) -> list[float]:
    """(c) baseline: publish -> bare subscriber callback, at the consumer phase's steady rate."""
    from convergence.infra.clients import subscriber_client
    from convergence.publisher.requests import RequestPublisher

    suffix = uuid.uuid4().hex[:8]
    topic = subscription = f"bench-bare-lat-{suffix}"
    create_topic_and_subscription(settings, topic, subscription)
    publisher = RequestPublisher(settings, topic=topic)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()

    def callback(message: Any) -> None:
        now = time.time()
        message.ack()
        with lock:
            started = sent.pop(message.attributes.get("run_id", ""), None)
            if started is not None:
                latencies.append(now - started)

    subscriber = subscriber_client(settings)
    future = subscriber.subscribe(settings.subscription_path(subscription), callback=callback)
    time.sleep(1.0)  # stream open

    def publish(i: int) -> None:
        with lock:
            sent[payloads[i].run_id] = time.time()
        publisher.publish_raw(payloads[i].to_json(), payloads[i].attributes())

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


def feed(publisher: Any, poller: Any, requests: list[Any], window: int, base: float, timeout: float,
         progress: Callable[[int], None]) -> int:
    """Keep `window` run requests published and not completed (completed: succeeded above `base`): the
    consumer never runs short of work, and no message waits long enough for the emulator to redeliver it."""
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


def runlog_succeeded(runlog: Any, requests: list[Any], chunk: int = 1000) -> int:
    """How many of these runs have a SUCCESS row in the run log (a few queries, after the measurement)."""
    pairs = [(r.org_slug, r.run_id) for r in requests]
    return sum(len(runlog.succeeded_among(pairs[i:i + chunk])) for i in range(0, len(pairs), chunk))


def events_topic_subscriptions(settings: Any) -> list[str]:
    from convergence.infra.clients import publisher_client

    publisher = publisher_client(settings)
    try:
        return list(publisher.list_topic_subscriptions(topic=settings.topic_path(settings.events_topic)))
    finally:
        publisher.transport.close()


class Completions:
    """Follows pipeline_completed events (their Pub/Sub publish times) on a subscription of its own."""

    def __init__(self, settings: Any):
        import json

        from convergence.infra.clients import subscriber_client

        self.name = f"bench-events-{uuid.uuid4().hex[:8]}"
        subscriber = subscriber_client(settings)
        subscriber.create_subscription(name=settings.subscription_path(self.name),
                                       topic=settings.topic_path(settings.events_topic), ack_deadline_seconds=60)
        self.settings, self.subscriber = settings, subscriber
        self.lock = threading.Lock()
        self.completed: dict[str, float] = {}
        self.event_types: Counter[str] = Counter()

        def on_event(message: Any) -> None:
            kind = message.attributes.get("event_type", "?")
            with self.lock:
                self.event_types[kind] += 1
                if kind == "pipeline_completed" and json.loads(message.data).get("status") == "SUCCESS":
                    self.completed.setdefault(message.attributes.get("run_id", ""), message.publish_time.timestamp())
            message.ack()

        self.future = subscriber.subscribe(settings.subscription_path(self.name), callback=on_event)

    def wait(self, run_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if set(run_ids) <= self.completed.keys():
                    return
            time.sleep(0.25)

    def close(self) -> None:
        from convergence.infra.apply import delete_subscription

        self.future.cancel()
        with contextlib.suppress(Exception):
            self.future.result(timeout=10)
        self.subscriber.close()
        delete_subscription(self.name, self.settings)
