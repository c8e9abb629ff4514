"""A whole platform on the local stack for end-to-end tests: unique Pub/Sub names and central dataset,
bootstrap, topology, onboarded orgs, a consumer running in a thread, an events follower."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from convergence.devstack.background import BackgroundConsumer
from convergence.settings.model import pubsub_resource_fields

REPO = Path(__file__).resolve().parent.parent
PUBSUB_NAME_FIELDS = pubsub_resource_fields()


def make_configs_dir(root: Path) -> Path:
    """The repo's configs plus the test pipelines under configs/testing/ (test processors)."""
    configs = root / "configs"
    # A copy, not symlinks: the loader refuses paths that resolve outside the configs directory.
    shutil.copytree(REPO / "configs", configs)
    shutil.copytree(REPO / "tests" / "configs_extra" / "testing", configs / "testing")
    return configs


def platform_settings(local_stack: Any, configs_dir: Path, **overrides: Any) -> Any:
    from convergence.settings.model import Settings, load_settings

    suffix = uuid.uuid4().hex[:8]
    names = {name: f"{Settings.model_fields[name].default}-{suffix}" for name in PUBSUB_NAME_FIELDS}
    base = dict(
        pubsub_emulator_host=local_stack.pubsub.host, bigquery_emulator_host=local_stack.bigquery.host,
        gcp_project_id=local_stack.project, environment="local", central_dataset=f"organizations_{suffix}",
        configs_dir=configs_dir, processor_packages=["convergence.processors", "tests.fake_processors"],
        local_keyring_path=configs_dir.parent / "keyring.key", retry_min_backoff_seconds=1,
        retry_max_backoff_seconds=2, consumer_workers=4, per_org_concurrency=2, shutdown_grace_seconds=10,
    )
    return load_settings(**{**base, **names, **overrides})


class EventFollower:
    """Pulls the events topic in a thread; events grouped by run_id, in arrival order."""

    def __init__(self, settings: Any):
        from convergence.infra.apply import ensure_subscription
        from convergence.infra.clients import subscriber_client
        from convergence.infra.topology import follower_subscription

        self.name = f"follower-{uuid.uuid4().hex[:8]}"
        ensure_subscription(follower_subscription(settings, self.name), settings)
        self.path = settings.subscription_path(self.name)
        self.subscriber = subscriber_client(settings)
        self.events: dict[str, list[dict]] = defaultdict(list)
        self.lock = threading.Lock()
        self.future = self.subscriber.subscribe(self.path, callback=self._on_event)

    def _on_event(self, message: Any) -> None:
        event = json.loads(message.data)
        with self.lock:
            self.events[event.get("run_id")].append(event)
        message.ack()

    def of(self, run_id: str) -> list[dict]:
        with self.lock:
            return list(self.events.get(run_id, []))

    def wait_for(self, run_id: str, event_type: str, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.of(run_id)
            if any(e["event_type"] == event_type for e in events):
                return events
            time.sleep(0.05)
        seen = [e["event_type"] for e in self.of(run_id)]
        raise AssertionError(f"no {event_type} for {run_id} within {timeout}s; saw {seen}")

    def close(self) -> None:
        self.future.cancel()
        with contextlib.suppress(Exception):
            self.future.result(timeout=10)
        self.subscriber.close()


class Platform:
    def __init__(self, local_stack: Any, root: Path, **overrides: Any):
        from convergence.infra.apply import apply
        from convergence.infra.topology import Topology
        from convergence.runtime import Services
        from convergence.warehouse.bootstrap import bootstrap

        self.root = root
        self.settings = platform_settings(local_stack, make_configs_dir(root), **overrides)
        self.services = Services(self.settings)
        report = bootstrap(self.services.bigquery, self.settings)
        assert report.ok, report
        apply(Topology.from_settings(self.settings), self.settings)
        self.follower = EventFollower(self.settings)
        self.notifications: list[Any] = []
        self.consumer: BackgroundConsumer | None = None

    async def _notify(self, outcome: Any) -> None:
        self.notifications.append(outcome)

    def onboard(self, org: str, plan: str = "SCALE", status: str = "ACTIVE") -> Any:
        from convergence.tenancy.onboarding import onboard_org

        return onboard_org(self.services.bigquery, self.settings, self.services.cipher, org, plan,
                           subscription_status=status)

    def start_consumer(self) -> BackgroundConsumer:
        from convergence.runtime import Services

        # The consumer gets its own Services, as a separate process would.
        self.consumer = BackgroundConsumer(self.settings, Services(self.settings), notify=self._notify).start()
        return self.consumer

    def publish(self, org: str, pipeline: str, parameters: dict | None = None, run_id: str | None = None) -> str:
        return self.services.requests.publish_run(org, pipeline, parameters or {}, run_id=run_id)

    def publish_raw(self, data: bytes, **attributes: str) -> str:
        return self.services.requests.publish_raw(data, attributes).result(timeout=30)

    def run_record(self, run_id: str, timeout: float = 30.0, status: str | None = None) -> Any:
        deadline = time.monotonic() + timeout
        record = None
        while time.monotonic() < deadline:
            record = self.services.runlog.latest_run(run_id)
            if record is not None and (status is None or record.status == status):
                return record
            time.sleep(0.2)
        raise AssertionError(f"run {run_id}: latest record {record}")

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.stop()
        self.follower.close()
        self.services.close()


def settings_env(settings: Any) -> dict[str, str]:
    """The environment a separate `convergence` process needs to see these settings."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        if name in ("ca_root_api_key",):
            continue
        env[name.upper()] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return env


class ConsumerProcess:
    """`python -m convergence consume` as a real child process (for SIGKILL / SIGTERM tests)."""

    def __init__(self, settings: Any, log_path: Path, **extra_env: str):
        import os
        import subprocess
        import sys

        env = {**os.environ, **settings_env(settings), "LOG_FORMAT": "json", **extra_env}
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "convergence", "consume"], cwd=REPO, env=env,
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self.log.close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log.close()
