"""The stage histograms of a run (slot wait, admission wait, run-log commit, final event publish) on the
emulators: three runs through a consumer in a thread, the consumer's own /metrics scraped before and after.

The registry is process-wide (other modules run consumers too), so counts are deltas between the scrapes.
"""

from __future__ import annotations

import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Platform

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

ORG = "stages_org"
STAGES = ("convergence_slot_wait_seconds", "convergence_admission_wait_seconds",
          "convergence_runlog_commit_seconds", "convergence_event_publish_seconds")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_run_observes_each_stage_histogram_once(local_stack, tmp_path):
    platform = Platform(local_stack, tmp_path, metrics_port=0, consumer_workers=4, per_org_concurrency=4)
    try:
        platform.onboard(ORG)
        consumer = platform.start_consumer()
        deadline = time.monotonic() + 30
        while consumer.service.metrics_server is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert consumer.service.metrics_server is not None, "metrics port never opened"
        port = consumer.service.metrics_server.port
        before = scrape(port)
        run_ids = [platform.publish(ORG, "testing/consumer/ok", run_id=f"run_{uuid.uuid4().hex}") for _ in range(3)]
        for run_id in run_ids:
            platform.follower.wait_for(run_id, "pipeline_completed")
        # A run's message is acked after its handler returned, so every stage is observed by then.
        subscription = (("subscription", platform.settings.requests_subscription),)
        acked = ("convergence_messages_acked_total", subscription)
        deadline = time.monotonic() + 20
        while True:
            after = scrape(port)
            if after.get(acked, 0.0) - before.get(acked, 0.0) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        platform.close()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    # Per run: one slot wait, one admission wait, one final event publish.
    assert delta("convergence_slot_wait_seconds_count") == 3
    assert delta("convergence_admission_wait_seconds_count") == 3
    assert delta("convergence_event_publish_seconds_count") == 3
    # Group commits: the runs' rows share them, but each run's final row is committed before its event.
    assert 1 <= delta("convergence_runlog_commit_seconds_count") <= 6
    for name in STAGES:
        assert delta(f"{name}_sum") > 0, name
        # Cumulative buckets: +Inf holds every observation.
        assert delta(f"{name}_bucket", le="+Inf") == delta(f"{name}_count"), name
    # No labels on the stage histograms: one series each.
    assert {labels for name, labels in after if name == "convergence_admission_wait_seconds_count"} == {()}
