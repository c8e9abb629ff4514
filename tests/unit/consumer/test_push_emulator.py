"""Push delivery from the real Pub/Sub emulator into `POST /pubsub/push` on a 127.0.0.1 test server.

The emulator sends no Authorization header (even with an OIDC push config), so verification is off
here (development); token checks are covered in test_push_endpoint.py and test_oidc.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from google.cloud import pubsub_v1

from convergence.consumer.http_app import create_app
from convergence.consumer.outcome import Outcome, OutcomeKind
from convergence.settings.model import load_settings
from tests.unit.consumer.test_push_endpoint import RecordingHandler

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


async def _eventually(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


class PushRig:
    """A topic and a push subscription on the emulator whose endpoint is our app on 127.0.0.1."""

    def __init__(self, project: str, handler: RecordingHandler) -> None:
        self.project = project
        self.handler = handler
        suffix = uuid.uuid4().hex[:10]
        self.topic = f"projects/{project}/topics/push-test-{suffix}"
        self.subscription = f"projects/{project}/subscriptions/push-test-{suffix}"
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        settings = load_settings(environment="development", push_verify_token=False,
                                 push_ack_deadline_seconds=10)
        self.server = TestServer(create_app(settings, handler), host="127.0.0.1")

    async def start(self) -> None:
        await self.server.start_server()
        endpoint = str(self.server.make_url("/pubsub/push"))
        await asyncio.to_thread(self.publisher.create_topic, name=self.topic)
        await asyncio.to_thread(self.subscriber.create_subscription, request={
            "name": self.subscription, "topic": self.topic, "ack_deadline_seconds": 10,
            "push_config": {"push_endpoint": endpoint},
        })

    async def publish(self, data: bytes, **attributes: str) -> str:
        future = self.publisher.publish(self.topic, data, **attributes)
        return await asyncio.to_thread(future.result, 30)

    async def close(self) -> None:
        # Delete the subscription first so the emulator stops pushing to a closed port.
        await asyncio.to_thread(self.subscriber.delete_subscription, subscription=self.subscription)
        await asyncio.to_thread(self.publisher.delete_topic, topic=self.topic)
        await self.server.close()
        self.subscriber.close()


@pytest.fixture
async def rig_factory(local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", local_stack.pubsub.host)
    rigs: list[PushRig] = []

    async def make(handler: RecordingHandler) -> PushRig:
        rig = PushRig(local_stack.project, handler)
        await rig.start()
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.close()


async def test_a_published_message_reaches_the_handler_through_push(rig_factory: Callable) -> None:
    handler = RecordingHandler()
    rig = await rig_factory(handler)
    data = b'{"run_id": "run-push-1", "org_slug": "acme"}'
    message_id = await rig.publish(data, org_slug="acme", run_id="run-push-1", trace_id="t-1")
    await _eventually(lambda: len(handler.calls) >= 1)
    call = handler.calls[0]
    assert call.data == data
    assert call.attributes == {"org_slug": "acme", "run_id": "run-push-1", "trace_id": "t-1"}
    assert call.message_id == message_id
    assert call.delivery_attempt is None  # the emulator does not send deliveryAttempt on push
    assert call.deadline_seconds == 8.0  # 10 s ack deadline minus the 2 s margin
    await asyncio.sleep(3)  # acked with 204: never pushed again
    assert len(handler.calls) == 1
    assert rig.server.app is not None


async def test_a_503_answer_makes_the_emulator_push_again(rig_factory: Callable) -> None:
    handler = RecordingHandler(outcomes=[Outcome(OutcomeKind.RETRY, code="TRANSIENT"),
                                         Outcome(OutcomeKind.SUCCEEDED)])
    rig = await rig_factory(handler)
    message_id = await rig.publish(b"payload", org_slug="acme")
    await _eventually(lambda: len(handler.calls) >= 2)
    assert [call.message_id for call in handler.calls[:2]] == [message_id, message_id]
    assert handler.calls[1].data == b"payload"
    await asyncio.sleep(3)  # the second answer was 204: the redeliveries stop
    assert len(handler.calls) == 2
