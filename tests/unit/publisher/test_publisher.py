"""Publisher library against the emulator: what is published is exactly what the consumer will decode."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from convergence.infra import Topology, apply, ensure_subscription, follower_subscription
from convergence.publisher import EventPublisher, PublishError, RequestPublisher
from convergence.schemas import (
    EventError,
    EventType,
    MessageRejected,
    PipelineEvent,
    RejectCode,
    RunRequest,
    decode_pipeline_event,
    decode_run_request,
)
from convergence.settings.model import Settings

pytestmark = pytest.mark.emulator

Pull = Callable[..., list[Any]]


@pytest.fixture
def settings(pubsub_settings: Callable[..., Settings]) -> Settings:
    settings = pubsub_settings()
    apply(Topology.from_settings(settings), settings)
    return settings


def test_publish_run_round_trip(settings: Settings, pull_messages: Pull) -> None:
    with RequestPublisher(settings) as publisher:
        run_id = publisher.publish_run(
            "acme_corp", "openai//usage_cost", {"day": "2026-02-01", "limit": 10, "dry": True},
            trigger="backfill", requested_by="cli:alice", trace_id="trace-0001",
        )  # fmt: skip
    assert run_id.startswith("run_") and len(run_id) == 36

    [received] = pull_messages(settings, settings.requests_subscription, 1)
    message = received.message
    body = json.loads(message.data)
    assert body["run_id"] == run_id and body["trigger"] == "backfill" and body["requested_by"] == "cli:alice"
    assert body["parameters"] == {"day": "2026-02-01", "limit": 10, "dry": True}
    assert dict(message.attributes) == {
        "schema_version": "1", "org_slug": "acme_corp", "pipeline": "openai//usage_cost",
        "run_id": run_id, "trace_id": "trace-0001",
    }  # fmt: skip
    request = decode_run_request(message.data, message.attributes)
    assert request.parameters["limit"] == 10 and request.trace_id == "trace-0001"


def test_given_run_id_is_kept_and_a_trace_id_is_always_set(settings: Settings, pull_messages: Pull) -> None:
    with RequestPublisher(settings) as publisher:
        run_id = publisher.publish_run("acme_corp", "gcp/cost/billing", run_id="sched_acme_corp_2026-02-01")
    assert run_id == "sched_acme_corp_2026-02-01"
    [received] = pull_messages(settings, settings.requests_subscription, 1)
    assert received.message.attributes["run_id"] == run_id
    assert len(received.message.attributes["trace_id"]) == 32


def test_invalid_request_is_refused_before_publishing(settings: Settings, pull_messages: Pull) -> None:
    with RequestPublisher(settings) as publisher:
        with pytest.raises(MessageRejected) as caught:
            publisher.publish_run("Acme Corp", "gcp/cost/billing")
        assert caught.value.code is RejectCode.SCHEMA_INVALID and "org_slug" in caught.value.message
        with pytest.raises(MessageRejected) as caught:
            publisher.publish_run("acme_corp", "gcp/billing")
        assert caught.value.code is RejectCode.INVALID_PIPELINE_PATH
        # A model built directly skips the schema; the publisher checks it anyway.
        sneaky = RunRequest(**{**RunRequest.create("acme_corp", "gcp/cost/billing").model_dump(),
                               "parameters": {"org_slug": "victim_org"}})  # fmt: skip
        with pytest.raises(MessageRejected, match="reserved"):
            publisher.publish_request(sneaky)
    assert pull_messages(settings, settings.requests_subscription, 1, timeout=1.5) == []


def test_publish_many_batches_and_waits_for_all(settings: Settings, pull_messages: Pull) -> None:
    count = 2000
    requests = [
        RunRequest.create(f"org_{i % 50:03d}", "gcp/cost/billing", {"n": i}, trigger="scheduled")
        for i in range(count)
    ]
    with RequestPublisher(settings) as publisher:
        started = time.perf_counter()
        run_ids = publisher.publish_many(requests)
        elapsed = time.perf_counter() - started
    assert run_ids == [request.run_id for request in requests]
    received = pull_messages(settings, settings.requests_subscription, count, timeout=30)
    assert sorted(m.message.attributes["run_id"] for m in received) == sorted(run_ids)
    print(f"publish_many: {count} requests in {elapsed:.2f} s ({count / elapsed:.0f}/s)")


def test_publish_many_reports_every_failure(pubsub_settings: Callable[..., Settings]) -> None:
    settings = pubsub_settings()  # nothing applied: the topic does not exist
    requests = [RunRequest.create("acme_corp", "gcp/cost/billing") for _ in range(3)]
    with RequestPublisher(settings) as publisher, pytest.raises(PublishError) as caught:
        publisher.publish_many(requests, timeout=30)
    assert set(caught.value.failed) == {request.run_id for request in requests}
    assert caught.value.published == []
    assert "NotFound" in str(caught.value)


def _events_of(run: RunRequest) -> list[PipelineEvent]:
    steps = ["extract", "load"]
    events = [PipelineEvent.for_request(EventType.PIPELINE_STARTED, run, status="RUNNING", attempt=1)]
    for step in steps:
        events.append(PipelineEvent.for_request(EventType.STEP_STARTED, run, step_id=step, status="RUNNING"))
        events.append(PipelineEvent.for_request(
            EventType.STEP_COMPLETED, run, step_id=step, status="SUCCESS", rows_processed=10, duration_ms=5,
        ))  # fmt: skip
    events.append(PipelineEvent.for_request(
        EventType.PIPELINE_COMPLETED, run, status="SUCCESS", rows_processed=20, duration_ms=12,
    ))  # fmt: skip
    return events


def test_events_are_schema_valid_and_ordered_per_run(settings: Settings, pull_messages: Pull) -> None:
    follower = follower_subscription(settings, f"follow-{settings.events_topic}")
    ensure_subscription(follower, settings)
    runs = [RunRequest.create("acme_corp", "gcp/cost/billing"), RunRequest.create("beta_inc", "openai//usage")]
    sent = {run.run_id: _events_of(run) for run in runs}
    with EventPublisher(settings, strict_schema=True) as events:
        futures = [events.publish_event(e) for pair in zip(*sent.values(), strict=True) for e in pair]
        assert events.flush(timeout=30)
    assert all(future.done() and future.exception() is None for future in futures)

    received = pull_messages(settings, follower.name, 12, timeout=30)
    by_run: dict[str, list[PipelineEvent]] = {}
    for item in received:
        event = decode_pipeline_event(item.message.data)  # the full JSON Schema check
        assert item.message.ordering_key == events.ordering_key(event.org_slug) != ""
        assert item.message.attributes["event_type"] == event.event_type.value
        by_run.setdefault(event.run_id, []).append(event)
    for run_id, events_sent in sent.items():
        assert [e.event_id for e in by_run[run_id]] == [e.event_id for e in events_sent]


def test_rejected_event_without_run_id_is_published(settings: Settings, pull_messages: Pull) -> None:
    follower = follower_subscription(settings, f"follow-{settings.events_topic}")
    ensure_subscription(follower, settings)
    event = PipelineEvent(
        event_type=EventType.REQUEST_REJECTED, run_id=None, org_slug=None, pipeline=None, status="REJECTED",
        error=EventError(code="MALFORMED_JSON", message="run request is not valid UTF-8"),
    )  # fmt: skip
    with EventPublisher(settings, strict_schema=True) as events:
        events.publish_event(event).result(timeout=30)
    [item] = pull_messages(settings, follower.name, 1)
    assert decode_pipeline_event(item.message.data) == event
    assert item.message.ordering_key == ""


def test_a_failed_event_does_not_block_the_rest_of_its_run(
    pubsub_settings: Callable[..., Settings], pull_messages: Pull
) -> None:
    settings = pubsub_settings()  # the events topic does not exist yet: the first publish fails
    run = RunRequest.create("acme_corp", "gcp/cost/billing")
    first, second = _events_of(run)[:2]
    with EventPublisher(settings) as events:
        with pytest.raises(Exception, match="NotFound|not found"):
            events.publish_event(first).result(timeout=30)
        assert events.flush(timeout=10)
        apply(Topology.from_settings(settings), settings)
        follower = follower_subscription(settings, f"follow-{settings.events_topic}")
        ensure_subscription(follower, settings)
        # The client paused the org's ordering key after the failure; the publisher resumed it.
        events.publish_event(second).result(timeout=30)
    [item] = pull_messages(settings, follower.name, 1)
    assert decode_pipeline_event(item.message.data).event_id == second.event_id


def test_an_orgs_events_share_one_of_a_bounded_set_of_ordering_keys(settings: Settings) -> None:
    with EventPublisher(settings) as events:
        keys = {org: events.ordering_key(org) for org in (f"org_{i:04d}" for i in range(1000))}
        assert all(events.ordering_key(org) == key for org, key in keys.items())  # stable: one key per org
        assert events.ordering_key(None) == ""
    assert len(set(keys.values())) == settings.events_ordering_keys == 16
