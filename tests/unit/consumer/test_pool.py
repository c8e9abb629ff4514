"""SubscriberPool against an in-memory streaming pull (fake_pubsub): delivery states, drain order, nacks
between "pulling stopped" and "sender stopped", hand-offs, lost streams, reachability probes."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from concurrent.futures import Future

import pytest
import structlog
from google.api_core import exceptions

from convergence.consumer.flow import FlowPlan
from convergence.consumer.outcome import Outcome, OutcomeKind
from convergence.consumer.pool import MAX_HAND_OFFS, DeliveryState, PoolState, StreamState, SubscriberPool
from convergence.consumer.service import ConsumerService
from convergence.consumer.slots import RunSlots
from tests.unit.consumer.fake_pubsub import FakeSubscriber

SUBSCRIPTION = "projects/p/subscriptions/requests"


class GatedHandler:
    """Each run waits until the test releases it (by message id)."""

    def __init__(self) -> None:
        self.started: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.release: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.calls: list[str] = []
        self.cancelled: list[str] = []

    async def handle(self, data, attributes, message_id, delivery_attempt, *, deadline_seconds=None,
                     publish_time=None) -> Outcome:
        self.calls.append(message_id)
        self.started[message_id].set()
        try:
            await self.release[message_id].wait()
        except asyncio.CancelledError:
            self.cancelled.append(message_id)
            raise
        return Outcome(OutcomeKind.SUCCEEDED, message_id, attributes.get("org_slug"))


class ObservedSlots(RunSlots):
    """RunSlots that tell the test when a delivery asks for a slot (it is then waiting or running)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def acquire(self, org, **kwargs):
        self.asked[org].set()
        return super().acquire(org, **kwargs)


def make_pool(handler, *, total=1, per_org=1, backlog=10, grace=30.0, hand_off=None, subscription=SUBSCRIPTION,
              max_hand_offs=MAX_HAND_OFFS):
    subscriber = FakeSubscriber()
    plan = FlowPlan(max_messages=10, max_bytes=1 << 20, max_lease_duration=600, max_lease_extension=60,
                    backlog_per_org=backlog)
    slots = ObservedSlots(total, per_org, backlog)
    pool = SubscriberPool(subscription, handler, slots, plan, hand_off=hand_off, grace_seconds=grace,
                          subscriber=subscriber, probe_seconds=3600, max_hand_offs=max_hand_offs)
    return pool, subscriber, slots


async def start(pool, subscriber) -> asyncio.Task:
    task = asyncio.create_task(pool.run())
    await subscriber.subscribed.wait()
    return task


async def settled(stream, message):
    return await asyncio.to_thread(stream.wait_settled, message)


async def test_drain_lets_the_running_run_finish_then_nacks_the_waiting_one_before_the_sender_stops():
    handler = GatedHandler()
    pool, subscriber, slots = make_pool(handler, total=1)
    task = await start(pool, subscriber)
    stream = subscriber.stream
    stream.deliver("run", attributes={"org_slug": "org_a"})
    await handler.started["run"].wait()
    waiting = stream.deliver("wait", attributes={"org_slug": "org_b"})
    await slots.asked["org_b"].wait()
    assert {d.message.message_id: d.state for d in pool.deliveries()} == {
        "run": DeliveryState.RUNNING, "wait": DeliveryState.WAITING}

    pool.stop()
    assert pool.state is PoolState.DRAINING
    await asyncio.to_thread(stream.pulling_stopped.wait, 10)  # pulling stops at once, the run goes on
    assert stream.of(waiting) == []  # not nacked while the client might still hand it back to us
    handler.release["run"].set()
    stats = await task

    assert subscriber.journal == ["pulling stopped", "ack run", "nack wait", "sender stopped", "client closed"]
    assert handler.calls == ["run"] and stream.lost == []
    assert (stats.received, stats.acked, stats.nacked) == (2, 1, 1)
    assert pool.state is PoolState.CLOSED and pool.stream_state is StreamState.CLOSED
    assert pool.deliveries() == []


async def test_a_run_longer_than_the_grace_is_cancelled_and_nacked():
    handler = GatedHandler()
    pool, subscriber, _ = make_pool(handler, grace=0)
    task = await start(pool, subscriber)
    subscriber.stream.deliver("slow", attributes={"org_slug": "org_a"})
    await handler.started["slow"].wait()
    pool.stop()
    stats = await task
    assert handler.cancelled == ["slow"]
    assert subscriber.journal == ["pulling stopped", "nack slow", "sender stopped", "client closed"]
    assert (stats.acked, stats.nacked) == (0, 1)


async def test_a_stream_slow_to_shut_down_does_not_hold_the_exit_and_its_channel_stays_open(monkeypatch):
    from convergence.consumer import pool as pool_module

    monkeypatch.setattr(pool_module, "STREAM_CLOSE_SECONDS", 0.05)
    pool, subscriber, _ = make_pool(GatedHandler())
    task = await start(pool, subscriber)
    stream = subscriber.stream
    stream.sender_busy.clear()  # the sender is stuck in an RPC
    try:
        with structlog.testing.capture_logs() as logs:
            pool.stop()
            await task
        events = [line["event"] for line in logs]
        assert "streaming pull did not shut down in time or Pub/Sub is unreachable; leaving it to the exit" in events
        assert subscriber.journal == ["pulling stopped"] and not subscriber.closed
    finally:
        stream.sender_busy.set()


async def test_a_message_arriving_while_draining_is_nacked_after_pulling_stopped_not_before():
    handler = GatedHandler()
    pool, subscriber, _ = make_pool(handler)
    task = await start(pool, subscriber)
    stream = subscriber.stream
    stream.deliver("run", attributes={"org_slug": "org_a"})
    await handler.started["run"].wait()
    pool.stop()
    await asyncio.to_thread(stream.pulling_stopped.wait, 10)
    late = stream.message("late", attributes={"org_slug": "org_a"})
    pool._on_message(late)  # a callback already under way when pulling stopped
    handler.release["run"].set()
    await task
    [settlement] = stream.of(late)
    assert settlement.kind == "nack" and not settlement.while_pulling
    assert subscriber.journal == ["pulling stopped", "ack run", "nack late", "sender stopped", "client closed"]
    assert handler.calls == ["run"]


async def test_cancelled_before_its_first_step_the_delivery_is_held_and_nacked():
    handler = GatedHandler()
    pool, subscriber, slots = make_pool(handler)
    task = await start(pool, subscriber)
    early = subscriber.stream.message("early", attributes={"org_slug": "org_a"})
    # _start creates the run's task; the drain starts before that task's first step.
    asyncio.get_running_loop().call_soon(pool._start, early)
    pool.stop()
    stats = await task
    assert handler.calls == [] and "org_a" not in slots.asked  # its body never ran
    assert subscriber.journal == ["pulling stopped", "nack early", "sender stopped", "client closed"]
    assert (stats.received, stats.nacked) == (1, 1)


async def test_a_redelivery_of_a_held_message_is_its_own_delivery_and_both_copies_are_nacked_once():
    handler = GatedHandler()
    pool, subscriber, _ = make_pool(handler)
    task = await start(pool, subscriber)
    stream = subscriber.stream
    stream.deliver("run", attributes={"org_slug": "org_a"})
    await handler.started["run"].wait()
    pool.stop()
    await asyncio.to_thread(stream.pulling_stopped.wait, 10)
    first = stream.message("dup", attributes={"org_slug": "org_b"})
    again = stream.message("dup", attributes={"org_slug": "org_b"})  # same message id, new ack id
    pool._on_message(first)
    pool._on_message(again)
    handler.release["run"].set()
    stats = await task
    assert [s.kind for s in stream.of(first)] == ["nack"] and [s.kind for s in stream.of(again)] == ["nack"]
    assert subscriber.journal.count("nack dup") == 2 and stream.lost == []
    assert (stats.received, stats.acked, stats.nacked) == (3, 1, 2)


async def test_a_run_is_handed_off_at_most_once_and_a_bad_deferrals_attribute_counts_as_zero():
    handed: list[dict] = []

    async def hand_off(data, attributes):
        handed.append(dict(attributes))

    handler = GatedHandler()
    pool, subscriber, _ = make_pool(handler, total=2, per_org=1, backlog=0, hand_off=hand_off)
    task = await start(pool, subscriber)
    stream = subscriber.stream
    stream.deliver("first", attributes={"org_slug": "org_a"})
    await handler.started["first"].wait()
    # The org's slot is taken and its backlog here is full: these are handed off and acked...
    fresh = stream.deliver("fresh", attributes={"org_slug": "org_a"})
    bad = stream.deliver("bad", attributes={"org_slug": "org_a", "deferrals": "NaN"})
    assert (await settled(stream, fresh)).kind == "ack"
    assert (await settled(stream, bad)).kind == "ack"
    # ...but one handed off once already waits here for the slot, its lease kept by the client.
    worn = stream.deliver("worn", attributes={"org_slug": "org_a", "deferrals": "1"})
    handler.release["first"].set()
    await handler.started["worn"].wait()
    handler.release["worn"].set()
    assert (await settled(stream, worn)).kind == "ack"
    pool.stop()
    stats = await task
    assert [a.get("deferrals") for a in handed] == [None, "NaN"]  # the republisher counts (see below)
    assert handler.calls == ["first", "worn"]
    assert stats.handed_off == 2 and stats.acked == 4


async def test_the_overflow_pool_never_hands_off_its_runs_wait_for_the_slot():
    handed: list[dict] = []

    async def hand_off(data, attributes):
        handed.append(dict(attributes))

    handler = GatedHandler()
    pool, subscriber, slots = make_pool(handler, total=2, per_org=1, backlog=0, hand_off=hand_off, max_hand_offs=0)
    task = await start(pool, subscriber)
    stream = subscriber.stream
    stream.deliver("first", attributes={"org_slug": "org_a"})
    await handler.started["first"].wait()
    # Over the org's cap and backlog, and never handed off before: still it waits, leased.
    second = stream.deliver("second", attributes={"org_slug": "org_a"})
    while slots.waiting("org_a") == 0:
        await asyncio.sleep(0.01)
    assert [d.state.value for d in pool.deliveries()].count("waiting") == 1
    handler.release["first"].set()
    await handler.started["second"].wait()
    handler.release["second"].set()
    assert (await settled(stream, second)).kind == "ack"
    pool.stop()
    stats = await task
    assert handed == [] and stats.handed_off == 0 and handler.calls == ["first", "second"]


@pytest.mark.parametrize("error", [exceptions.NotFound("Resource not found (resource=requests)."), None])
async def test_a_stream_that_ends_by_itself_is_lost_its_runs_nacked_and_one_error_logged(error):
    handler = GatedHandler()
    pool, subscriber, _ = make_pool(handler)
    task = await start(pool, subscriber)
    stream = subscriber.stream
    running = stream.deliver("run", attributes={"org_slug": "org_a"})
    await handler.started["run"].wait()
    with structlog.testing.capture_logs() as logs:
        stream.end(error)
        await task
    assert pool.lost and pool.stream_state is StreamState.LOST
    assert [s.kind for s in stream.of(running)] == ["nack"] and stream.lost == []
    assert handler.cancelled == ["run"]
    errors = [line for line in logs if line["log_level"] == "error"]
    assert [line["event"] for line in errors] == ["streaming pull ended; stopping the process so it is restarted"]
    expected = "NotFound: 404 Resource not found" if error else "the stream ended without an error"
    assert errors[0]["reason"].startswith(expected)
    assert pool.health()["ok"] is False and pool.health()["stream"] == "lost"


async def test_health_reports_unreachable_pubsub_once_and_recovers():
    pool, subscriber, _ = make_pool(GatedHandler())
    task = await start(pool, subscriber)
    health = pool.health()
    assert health["ok"] and health["stream"] == "open" and health["state"] == "running"
    assert health["last_pull_age_seconds"] is not None
    subscriber.probe_error = exceptions.ServiceUnavailable("failed to connect to all addresses")
    with structlog.testing.capture_logs() as logs:
        assert await pool.probe() is False
        assert await pool.probe() is False
    assert [line["event"] for line in logs] == ["Pub/Sub unreachable"]
    assert pool.health()["ok"] is False and pool.health()["reachable"] is False
    subscriber.probe_error = None
    assert await pool.probe() is True
    assert pool.health()["ok"] is True
    subscriber.probe_error = exceptions.PermissionDenied("no subscriptions.get")  # answered: reachable
    assert await pool.probe() is True and pool.health()["ok"] is True
    pool.stop()
    await task
    closed = pool.health()
    assert closed["ok"] and not closed["ready"] and closed["state"] == "closed" and closed["stream"] == "closed"


async def test_probe_finding_no_subscription_stops_the_pool_as_lost():
    pool, subscriber, _ = make_pool(GatedHandler())
    task = await start(pool, subscriber)
    subscriber.probe_error = exceptions.NotFound("Subscription does not exist")
    await pool.probe()
    await task
    assert pool.lost and "NotFound" in pool.lost_reason
    assert subscriber.journal == ["pulling stopped", "sender stopped", "client closed"]


async def test_a_lost_pool_drains_the_others_without_cancelling_their_runs():
    handler = GatedHandler()
    lost, lost_subscriber, _ = make_pool(handler, subscription="projects/p/subscriptions/ticks")
    other, other_subscriber, _ = make_pool(handler)
    service = ConsumerService.__new__(ConsumerService)
    service.pools = [lost, other]
    supervise = asyncio.create_task(service._supervise())
    await lost_subscriber.subscribed.wait()
    await other_subscriber.subscribed.wait()
    other_subscriber.stream.deliver("long", attributes={"org_slug": "org_a"})
    await handler.started["long"].wait()
    lost_subscriber.stream.end(exceptions.NotFound("gone"))
    await asyncio.to_thread(other_subscriber.stream.pulling_stopped.wait, 10)  # drained...
    assert other.state is PoolState.DRAINING
    handler.release["long"].set()  # ...so its run still finishes
    await supervise
    assert other_subscriber.journal == ["pulling stopped", "ack long", "sender stopped", "client closed"]
    assert handler.cancelled == [] and lost.lost and not other.lost
    body = service.health()
    assert body["status"] == "unavailable" and [p["stream"] for p in body["pools"]] == ["lost", "closed"]
    assert [p["ok"] for p in body["pools"]] == [False, True]


async def test_health_endpoint_answers_503_with_each_pool_when_pubsub_is_unreachable():
    from aiohttp import ClientSession

    from convergence.consumer.service import start_probe_server

    pool, subscriber, _ = make_pool(GatedHandler())
    task = await start(pool, subscriber)
    service = ConsumerService.__new__(ConsumerService)
    service.pools = [pool]
    server = await start_probe_server(service, 0, "127.0.0.1")
    try:
        async with ClientSession() as session:
            for path in ("/health", "/ready"):
                async with session.get(f"http://127.0.0.1:{server.port}{path}") as response:
                    assert response.status == 200 and (await response.json())["status"] == "ok"
            subscriber.probe_error = exceptions.ServiceUnavailable("unreachable")
            await pool.probe()
            for path in ("/health", "/ready"):
                async with session.get(f"http://127.0.0.1:{server.port}{path}") as response:
                    body = await response.json()
                    assert response.status == 503 and body["status"] == "unavailable"
                    [entry] = body["pools"]
                    assert entry["stream"] == "open" and entry["reachable"] is False
                    assert entry["last_pull_age_seconds"] >= 0
        subscriber.probe_error = None
        await pool.probe()
        pool.stop()  # draining: alive, not ready
        async with ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{server.port}/health") as response:
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{server.port}/ready") as response:
                assert response.status == 503 and (await response.json())["pools"][0]["state"] != "running"
    finally:
        await server.close()
        pool.stop()
        await task


@pytest.mark.parametrize(("value", "expected"), [
    ("NaN", 1), ("", 1), ("-1", 1), ("1.5", 1), (" 2", 1), ("²", 1), ("9" * 40, 1), ("2", 3), (None, 1),
])
async def test_republish_counts_a_bad_deferrals_attribute_as_zero(value, expected):
    published: list[dict] = []

    class Requests:
        def publish_raw(self, data, attributes):
            published.append(attributes)
            future: Future = Future()
            future.set_result("id")
            return future

    service = ConsumerService.__new__(ConsumerService)
    service.services = type("S", (), {"overflow": Requests()})()  # handed off to the overflow topic
    attributes = {"org_slug": "org_a"} if value is None else {"org_slug": "org_a", "deferrals": value}
    await service.republish(b"{}", attributes)
    assert published == [{"org_slug": "org_a", "deferrals": str(expected)}]
