"""`convergence dlq list|replay` on the emulators: a dead-lettered request (recorded by the consumer's
dead-letter drain with its original body) is listed, replayed with trigger `replay` and the same run_id,
runs, and leaves the list; replaying again never runs it twice."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from convergence.commands.dlq import DeadLetter, dlq, parse_since, replay_request
from convergence.schemas import RunRequest

# ---- unit ----------------------------------------------------------------------------------------------


def test_parse_since():
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_since("24h", now) == datetime(2026, 2, 28, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 2, 22, 12, 0, tzinfo=UTC)
    assert parse_since("2026-02-01", now) == datetime(2026, 2, 1, tzinfo=UTC)
    assert parse_since(None) is None


def test_replay_request_keeps_run_id_parameters_and_trace():
    original = RunRequest.create("acme_dlq", "testing/consumer/ok", {"seconds": 0}, "adhoc",
                                 run_id="run_" + "a" * 32, trace_id="trace-1")
    item = DeadLetter(original.run_id, "acme_dlq", original.pipeline, "adhoc", 5, original.to_json().decode(),
                      "gave up", None)
    replayed = replay_request(item)
    assert (replayed.run_id, replayed.parameters, replayed.trace_id) == (original.run_id, {"seconds": 0}, "trace-1")
    assert replayed.trigger == "replay" and replayed.requested_by == "convergence-dlq-replay"
    with pytest.raises(ValueError, match="no stored request"):
        replay_request(DeadLetter("msg_1", "__unknown", None, None, 5, None, "gave up", None))
    other = DeadLetter("run_" + "b" * 32, "acme_dlq", None, None, 5, original.to_json().decode(), "", None)
    with pytest.raises(ValueError, match="another run"):
        replay_request(other)


# ---- on the emulators ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform(local_stack, tmp_path_factory):
    from tests.harness import Platform

    platform = Platform(local_stack, tmp_path_factory.mktemp("dlq"))
    platform.onboard("acme_dlq")
    platform.start_consumer()
    yield platform
    platform.close()


@pytest.fixture
def cli(platform, monkeypatch):
    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: platform.settings)
    return lambda *args: CliRunner().invoke(dlq, list(args), catch_exceptions=False)


def dead_letter(platform, pipeline: str = "testing/consumer/ok") -> str:
    """A request as Pub/Sub forwards it after the last attempt: on the dead-letter topic, with the
    CloudPubSubDeadLetter* attributes. The consumer's drain records it DEAD_LETTERED."""
    from convergence.publisher.requests import RequestPublisher

    request = RunRequest.create("acme_dlq", pipeline, {"seconds": 0}, "adhoc", run_id=f"run_{uuid.uuid4().hex}",
                                trace_id=uuid.uuid4().hex)
    attributes = {**request.attributes(), "CloudPubSubDeadLetterSourceDeliveryCount": "5",
                  "CloudPubSubDeadLetterSourceSubscription": platform.settings.requests_subscription}
    with RequestPublisher(platform.settings, topic=platform.settings.dead_letter_topic) as publisher:
        publisher.publish_raw(request.to_json(), attributes).result(timeout=30)
    platform.follower.wait_for(request.run_id, "dead_lettered")
    platform.run_record(request.run_id, status="FAILED")
    return request.run_id


@pytest.mark.emulator
def test_list_and_replay_a_dead_lettered_request(platform, cli):
    run_id = dead_letter(platform)
    listed = cli("list", "--org", "acme_dlq", "--json")
    items = [json.loads(line) for line in listed.output.splitlines() if line.startswith("{")]
    assert [(i["run_id"], i["delivery_count"], i["replayable"]) for i in items] == [(run_id, 5, True)]

    assert cli("replay").exit_code == 2  # nothing said: refuses to replay everything by accident
    dry = cli("replay", "--run-id", run_id, "--dry-run")
    assert f"would replay {run_id}" in dry.output
    assert platform.follower.of(run_id)[-1]["event_type"] == "dead_lettered"

    result = cli("replay", "--run-id", run_id)
    assert result.exit_code == 0, result.output
    assert f"replayed {run_id}" in result.output
    events = platform.follower.wait_for(run_id, "pipeline_completed")
    assert events[-1]["status"] == "SUCCESS"
    started = [e for e in events if e["event_type"] == "pipeline_started"]
    assert [e["details"]["trigger"] for e in started] == ["replay"]
    assert "1 dead-lettered" not in cli("list", "--org", "acme_dlq").output  # replayed: off the list
    assert platform.run_record(run_id, status="SUCCESS").trigger == "replay"  # the run log's latest state

    # replaying again (or a copy arriving late) never runs it twice: the same run_id already succeeded
    again = cli("replay", "--run-id", run_id)
    assert again.exit_code == 1 and "not dead-lettered" in again.output
    from convergence.publisher.requests import RequestPublisher

    with RequestPublisher(platform.settings) as publisher:
        publisher.publish_many([RunRequest.create("acme_dlq", "testing/consumer/ok", {"seconds": 0}, "replay",
                                                  run_id=run_id)])
    time.sleep(3)
    assert sum(e["event_type"] == "pipeline_started" for e in platform.follower.of(run_id)) == 1


@pytest.mark.emulator
def test_replay_by_org_and_since(platform, cli):
    first, second = dead_letter(platform), dead_letter(platform)
    listed = cli("list", "--org", "acme_dlq", "--since", "10m")
    assert first in listed.output and second in listed.output
    result = cli("replay", "--org", "acme_dlq", "--since", "10m")
    assert result.exit_code == 0, result.output
    for run_id in (first, second):
        assert platform.follower.wait_for(run_id, "pipeline_completed")[-1]["status"] == "SUCCESS"
    assert "0 dead-lettered run(s)" in cli("list", "--org", "acme_dlq").output
