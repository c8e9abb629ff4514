"""Pub/Sub topology: built from settings, applied idempotently, dead-lettering as configured.

The emulator tests use the real google-cloud-pubsub client and unique resource names per test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import pubsub_v1

from convergence.infra import (
    Action,
    Topology,
    TopologyError,
    apply,
    delete_subscription,
    ensure_subscription,
    follower_subscription,
    subscriber_client,
)
from convergence.publisher import RequestPublisher
from convergence.schemas import decode_run_request
from convergence.settings.model import Settings, load_settings

# ---- the topology derived from settings (no emulator) ----


def plain(**overrides: Any) -> Settings:
    """Settings for a real project, whatever the environment of the test run says."""
    return load_settings(pubsub_emulator_host=None, **overrides)


def test_default_topology_is_pull_mode_with_policies_everywhere_they_matter() -> None:
    settings = plain(max_delivery_attempts=7, retry_min_backoff_seconds=5, retry_max_backoff_seconds=300)
    topology = Topology.from_settings(settings)
    assert [t.name for t in topology.topics] == [
        "pipeline-requests", "pipeline-events", "scheduler-ticks", "pipeline-requests-dead-letter",
        "scheduler-ticks-dead-letter", "pipeline-requests-overflow",
    ]  # fmt: skip
    requests = topology.subscription("pipeline-requests-worker")
    assert requests.topic == "pipeline-requests" and requests.push is None
    assert (requests.dead_letter.topic, requests.dead_letter.max_delivery_attempts) == (
        "pipeline-requests-dead-letter", 7,
    )  # fmt: skip
    assert (requests.retry.min_backoff_seconds, requests.retry.max_backoff_seconds) == (5, 300)
    assert requests.ack_deadline_seconds == settings.ack_deadline_seconds
    # Runs handed off over their org's cap are still run requests: the same delivery policy.
    overflow = topology.subscription("pipeline-requests-overflow-worker")
    assert overflow.topic == "pipeline-requests-overflow" and overflow.push is None
    assert (overflow.dead_letter, overflow.retry, overflow.ack_deadline_seconds) == (
        requests.dead_letter, requests.retry, requests.ack_deadline_seconds,
    )  # fmt: skip
    ticks = topology.subscription("scheduler-ticks-worker")
    assert ticks.dead_letter.topic == "scheduler-ticks-dead-letter" and ticks.retry is not None
    for name in ("pipeline-requests-dead-letter-worker", "scheduler-ticks-dead-letter-hold"):
        dlq = topology.subscription(name)
        assert dlq.dead_letter is None and dlq.retry is not None and dlq.expiration_ttl is None
    assert topology.worker_subscription == "pipeline-requests-worker"
    assert topology.dead_letter_subscription == "pipeline-requests-dead-letter-worker"


def test_subscription_proto_carries_every_policy() -> None:
    settings = plain(gcp_project_id="my-project", retry_min_backoff_seconds=0)
    proto = Topology.from_settings(settings).subscription("pipeline-requests-worker").to_proto("my-project")
    assert proto.name == "projects/my-project/subscriptions/pipeline-requests-worker"
    assert proto.topic == "projects/my-project/topics/pipeline-requests"
    assert proto.dead_letter_policy.dead_letter_topic == "projects/my-project/topics/pipeline-requests-dead-letter"
    assert proto.retry_policy.minimum_backoff == timedelta(0)
    assert proto.retry_policy.maximum_backoff == timedelta(seconds=600)
    assert "ttl" not in proto.expiration_policy  # never expires
    assert dict(proto.labels) == {"app": "convergence"}


def test_push_mode_moves_the_pull_subscription_to_the_handoff_topic() -> None:
    settings = plain(
        push_endpoint="https://convergence-abc.a.run.app/pubsub/push",
        push_service_account_email="pusher@my-project.iam.gserviceaccount.com",
        push_audience="https://convergence-abc.a.run.app",
    )
    topology = Topology.from_settings(settings)
    assert "pipeline-requests-handoff" in [t.name for t in topology.topics]
    push = topology.subscription("pipeline-requests-push")
    assert push.topic == "pipeline-requests" and push.ack_deadline_seconds == 600
    assert push.dead_letter is not None and push.retry is not None
    proto = push.to_proto("p")
    assert proto.push_config.push_endpoint == "https://convergence-abc.a.run.app/pubsub/push"
    assert proto.push_config.oidc_token.service_account_email == "pusher@my-project.iam.gserviceaccount.com"
    assert proto.push_config.oidc_token.audience == "https://convergence-abc.a.run.app"
    # Only one subscription consumes each request: the pull workers read the handoff topic.
    assert topology.subscription("pipeline-requests-worker").topic == "pipeline-requests-handoff"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"retry_min_backoff_seconds": 60, "retry_max_backoff_seconds": 10}, "larger than"),
        ({"push_endpoint": "http://example.com/push"}, "must be an https:// URL"),
        ({"push_endpoint": "https://x.run.app/push", "environment": "production"}, "push_service_account_email"),
        ({"events_topic": "pipeline-requests"}, "used twice: pipeline-requests"),
    ],
)
def test_impossible_topologies_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        Topology.from_settings(plain(**overrides))


def test_follower_subscription_is_ordered_filtered_and_expiring() -> None:
    spec = follower_subscription(plain(), "follow-run-1", run_id="run_abcdef12")
    assert spec.topic == "pipeline-events" and spec.enable_message_ordering
    assert spec.filter == 'attributes.run_id = "run_abcdef12"'
    assert spec.expiration_ttl == timedelta(days=1)
    with pytest.raises(TopologyError):
        follower_subscription(plain(), "follow-run-2", run_id='x" OR attributes.org_slug = "y')


# ---- applied to the emulator ----

emulator = pytest.mark.emulator


@emulator
def test_apply_twice_creates_then_reports_unchanged(pubsub_settings: Callable[..., Settings]) -> None:
    settings = pubsub_settings()
    topology = Topology.from_settings(settings)
    first = apply(topology, settings)
    assert {item.action for item in first.items} == {Action.CREATED}
    assert len(first.items) == len(topology.topics) + len(topology.subscriptions) == 11  # 6 topics, 5 subscriptions
    started = time.perf_counter()
    second = apply(topology, settings)
    assert time.perf_counter() - started < 5
    assert {item.action for item in second.items} == {Action.UNCHANGED}
    assert not second.changed and second.ok

    subscriber = subscriber_client(settings)
    try:
        live = subscriber.get_subscription(subscription=settings.subscription_path(settings.requests_subscription))
    finally:
        subscriber.close()
    assert live.dead_letter_policy.dead_letter_topic == settings.topic_path(settings.dead_letter_topic)
    assert live.dead_letter_policy.max_delivery_attempts == settings.max_delivery_attempts
    assert live.retry_policy.maximum_backoff == timedelta(seconds=settings.retry_max_backoff_seconds)
    assert live.ack_deadline_seconds == settings.ack_deadline_seconds


@emulator
def test_apply_updates_what_it_can_and_reports_what_it_cannot(pubsub_settings: Callable[..., Settings]) -> None:
    settings = pubsub_settings()
    apply(Topology.from_settings(settings), settings)

    changed = settings.model_copy(update={"ack_deadline_seconds": 120, "max_delivery_attempts": 9})
    report = apply(Topology.from_settings(changed), changed)
    requests = next(item for item in report.items if item.name == settings.requests_subscription)
    assert requests.action is Action.UPDATED
    assert "ack_deadline_seconds: 60 -> 120" in requests.updated
    assert any(change.startswith("dead_letter_policy:") and "9)" in change for change in requests.updated)
    assert apply(Topology.from_settings(changed), changed).ok

    # Switching to push mode would need the pull subscription on another topic: immutable, so reported.
    push = changed.model_copy(update={"push_endpoint": "http://127.0.0.1:9/pubsub/push?token=s3cret"})
    report = apply(Topology.from_settings(push), push)
    assert report.action_of(push.push_subscription) is Action.CREATED
    assert report.action_of(push.handoff_topic) is Action.CREATED
    drift = report.drift
    assert [item.name for item in drift] == [settings.requests_subscription]
    assert "topic:" in drift[0].cannot_change[0] and "immutable" in drift[0].cannot_change[0]
    assert "s3cret" not in " ".join(report.lines())
    assert [i.name for i in apply(Topology.from_settings(push), push).drift] == [settings.requests_subscription]

    rotated = push.model_copy(update={"push_endpoint": "http://127.0.0.1:9/pubsub/push?token=n3w"})
    report = apply(Topology.from_settings(rotated), rotated)
    assert report.action_of(push.push_subscription) is Action.UPDATED
    assert "n3w" not in " ".join(report.lines()) and "?..." in " ".join(report.lines())


@emulator
def test_follower_subscription_helper(pubsub_settings: Callable[..., Settings]) -> None:
    settings = pubsub_settings()
    apply(Topology.from_settings(settings), settings)
    spec = follower_subscription(settings, f"follow-{settings.events_topic}", run_id="run_12345678")
    assert ensure_subscription(spec, settings).action is Action.CREATED
    assert ensure_subscription(spec, settings).action is Action.UNCHANGED
    assert delete_subscription(spec.name, settings) is True
    assert delete_subscription(spec.name, settings) is False


@emulator
@pytest.mark.slow
def test_nacked_request_lands_on_dead_letter_topic_after_max_attempts(
    pubsub_settings: Callable[..., Settings],
) -> None:
    # Low backoff keeps this fast; the emulator still spaces attempts 3-5 about 2 s apart.
    settings = pubsub_settings(retry_min_backoff_seconds=0, retry_max_backoff_seconds=1, max_delivery_attempts=5)
    apply(Topology.from_settings(settings), settings)
    subscriber = subscriber_client(settings)
    attempts: list[int | None] = []
    dead: list[pubsub_v1.subscriber.message.Message] = []
    arrived = threading.Event()

    def always_fail(message: pubsub_v1.subscriber.message.Message) -> None:
        attempts.append(message.delivery_attempt)
        message.nack()

    def dead_letter(message: pubsub_v1.subscriber.message.Message) -> None:
        dead.append(message)
        message.ack()
        arrived.set()

    streams = [
        subscriber.subscribe(settings.subscription_path(settings.requests_subscription), always_fail),
        subscriber.subscribe(settings.subscription_path(settings.dead_letter_subscription), dead_letter),
    ]
    try:
        with RequestPublisher(settings) as publisher:
            started = time.perf_counter()
            run_id = publisher.publish_run("acme_corp", "gcp/cost/billing", {"day": "2026-02-01"})
        assert arrived.wait(30), f"not dead-lettered; attempts seen: {attempts}"
        elapsed = time.perf_counter() - started
    finally:
        for stream in streams:
            stream.cancel()
        subscriber.close()

    assert attempts == [1, 2, 3, 4, 5]
    message = dead[0]
    attributes = dict(message.attributes)
    assert attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert attributes["CloudPubSubDeadLetterSourceSubscription"] == settings.requests_subscription
    assert attributes["CloudPubSubDeadLetterSourceSubscriptionProject"] == settings.gcp_project_id
    assert "CloudPubSubDeadLetterSourceTopicPublishTime" in attributes
    # The original request survives intact, and still decodes with the extra attributes present.
    request = decode_run_request(message.data, attributes)
    assert request.run_id == run_id == attributes["run_id"]
    assert elapsed < 20
