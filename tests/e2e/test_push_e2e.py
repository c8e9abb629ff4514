"""Push delivery end to end: the emulator pushes run requests to `serve`'s endpoint, which runs them
with the same handler as the pull workers; a pipeline longer than a push request may last is handed
to the pull side (same run_id) and run there."""

import asyncio
import threading
import uuid

import pytest
from aiohttp import web

from convergence.consumer.serving import build_push_app
from convergence.devstack.ports import free_port
from convergence.runtime import Services
from tests.harness import Platform

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


class PushServer:
    def __init__(self, app: web.Application, port: int):
        self.app, self.port = app, port
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    def start(self):
        self.thread.start()
        assert self.ready.wait(10)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def push_platform(local_stack, tmp_path_factory):
    port = free_port()
    platform = Platform(local_stack, tmp_path_factory.mktemp("push"),
                        push_endpoint=f"http://127.0.0.1:{port}/pubsub/push", push_verify_token=False)
    platform.onboard("push_org")
    server = PushServer(build_push_app(platform.settings, Services(platform.settings), notify=platform._notify), port)
    server.start()
    platform.start_consumer()  # the pull side reads the handoff topic in push mode
    yield platform
    server.stop()
    platform.close()


def test_push_delivery_runs_the_pipeline(push_platform):
    rid = push_platform.publish("push_org", "testing/consumer/ok", run_id=f"run_{uuid.uuid4().hex}")
    events = push_platform.follower.wait_for(rid, "pipeline_completed", timeout=60)
    assert events[-1]["status"] == "SUCCESS"
    assert push_platform.run_record(rid, status="SUCCESS").rows_processed == 7
    assert push_platform.consumer.service.pools[0].stats.received == 0  # ran on the push side


def test_push_rejection_is_acked(push_platform):
    rid = push_platform.publish("push_org", "testing/consumer/missing", run_id=f"run_{uuid.uuid4().hex}")
    assert push_platform.follower.wait_for(rid, "request_rejected")[-1]["error"]["code"] == "UNKNOWN_PIPELINE"


def test_long_pipeline_is_handed_to_the_pull_side(push_platform):
    rid = push_platform.publish("push_org", "testing/consumer/long", run_id=f"run_{uuid.uuid4().hex}")
    events = push_platform.follower.wait_for(rid, "pipeline_completed", timeout=60)
    assert events[-1]["status"] == "SUCCESS"
    assert [e["event_type"] for e in events].count("pipeline_started") == 1
    assert push_platform.consumer.service.pools[0].stats.received >= 1  # the pull worker ran it
