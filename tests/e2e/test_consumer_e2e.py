"""The consumer end to end on the emulators: run requests in, events and run logs out, and the ack
policy for every kind of outcome (README "Ack policy")."""

import json
import time
import uuid

import pytest

from tests.harness import Platform

pytestmark = [pytest.mark.emulator, pytest.mark.slow]
STEP_EVENTS = {"step_started", "step_completed", "step_failed"}


@pytest.fixture(scope="module")
def platform(local_stack, tmp_path_factory):
    platform = Platform(local_stack, tmp_path_factory.mktemp("platform"))
    platform.onboard("acme_e2e")
    platform.onboard("suspended_e2e", status="SUSPENDED")
    platform.start_consumer()
    yield platform
    platform.close()


def run_id() -> str:
    return f"run_{uuid.uuid4().hex}"


def test_run_request_produces_ordered_events_and_run_logs(platform):
    rid = platform.publish("acme_e2e", "testing/consumer/ok", run_id=run_id())
    events = platform.follower.wait_for(rid, "pipeline_completed")
    types = [e["event_type"] for e in events]
    assert types[0] == "pipeline_started" and types[-1] == "pipeline_completed"
    assert types[1:-1] == ["step_started", "step_completed", "step_started", "step_completed"]
    assert [e["step_id"] for e in events if e["event_type"] in STEP_EVENTS] == ["first", "first", "second", "second"]
    assert events[-1]["status"] == "SUCCESS" and events[-1]["rows_processed"] == 7
    assert {e["pipeline_id"] for e in events} == {"acme_e2e-testing-consumer-ok"}
    record = platform.run_record(rid, status="SUCCESS")
    assert record.org_slug == "acme_e2e" and record.rows_processed == 7 and record.attempt == 1
    steps = platform.services.runlog.step_logs(rid, "acme_e2e")
    assert [(s.step_id, s.status, s.rows_processed) for s in steps] == [("first", "SUCCESS", 3),
                                                                        ("second", "SUCCESS", 4)]


@pytest.mark.parametrize(("org", "pipeline", "code"), [
    ("acme_e2e", "testing/consumer/nope", "UNKNOWN_PIPELINE"),
    ("nobody_e2e", "testing/consumer/ok", "ORG_NOT_FOUND"),
    ("suspended_e2e", "testing/consumer/ok", "SUBSCRIPTION_SUSPENDED"),
])
def test_rejections_are_acked_recorded_and_announced(platform, org, pipeline, code):
    rid = platform.publish(org, pipeline, run_id=run_id())
    events = platform.follower.wait_for(rid, "request_rejected")
    assert events[-1]["error"]["code"] == code
    record = platform.run_record(rid, status="REJECTED")
    assert record.error_code == code
    time.sleep(2.5)  # past the retry backoff: an acked message is never delivered again
    assert [e["event_type"] for e in platform.follower.of(rid)] == ["request_rejected"]


def test_a_pipeline_the_org_disabled_is_refused_at_the_consumer(platform):
    from convergence.tenancy import pipeline_configs
    from convergence.tenancy.central import Central

    platform.onboard("picky_e2e")
    central = Central(platform.services.bigquery, platform.settings)
    pipeline_configs.write_config(central, "picky_e2e", "testing/consumer/ok", pipeline_id=None, enabled=False)
    refused = platform.publish("picky_e2e", "testing/consumer/ok", run_id=run_id())
    assert platform.follower.wait_for(refused, "request_rejected")[-1]["error"]["code"] == "PIPELINE_DISABLED"
    assert platform.run_record(refused, status="REJECTED").org_slug == "picky_e2e"
    other = platform.publish("acme_e2e", "testing/consumer/ok", run_id=run_id())  # another org: unaffected
    assert platform.run_record(other, status="SUCCESS").org_slug == "acme_e2e"


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", "MALFORMED_JSON"),
    (json.dumps({"run_id": "run_12345678", "org_slug": "acme_e2e"}).encode(), "SCHEMA_INVALID"),
])
def test_malformed_messages_are_rejected_not_retried(platform, body, code):
    rid = run_id()
    platform.publish_raw(body, run_id=rid, org_slug="acme_e2e")
    events = platform.follower.wait_for(rid, "request_rejected")
    assert events[-1]["error"]["code"] == code
    assert platform.run_record(rid, status="REJECTED").error_code == code


def test_permanent_failure_is_acked_failed_and_notified(platform):
    rid = platform.publish("acme_e2e", "testing/consumer/permanent", run_id=run_id())
    events = platform.follower.wait_for(rid, "pipeline_completed")
    failed = [e for e in events if e["event_type"] == "step_failed"]
    assert [(e["step_id"], e["status"], e["error"]["code"]) for e in failed] == [
        ("extract", "FAILED", "PROVIDER_AUTH_FAILED"), ("transform", "SKIPPED", "UPSTREAM_FAILED")]
    assert events[-1]["status"] == "FAILED"
    assert platform.run_record(rid, status="FAILED").error_code == "PROVIDER_AUTH_FAILED"
    deadline = time.monotonic() + 5
    while not any(n.run_id == rid for n in platform.notifications) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [n.code for n in platform.notifications if n.run_id == rid] == ["PROVIDER_AUTH_FAILED"]
    time.sleep(2.5)
    assert sum(e["event_type"] == "pipeline_started" for e in platform.follower.of(rid)) == 1


def test_timeout_is_acked_with_status_timeout(platform):
    rid = platform.publish("acme_e2e", "testing/consumer/timeout", run_id=run_id())
    events = platform.follower.wait_for(rid, "pipeline_completed")
    assert events[-1]["status"] == "TIMEOUT"
    assert platform.run_record(rid, status="TIMEOUT").error_code == "STEP_TIMEOUT"


def test_transient_failure_is_retried_then_dead_lettered(platform):
    rid = platform.publish("acme_e2e", "testing/consumer/transient", run_id=run_id())
    events = platform.follower.wait_for(rid, "dead_lettered", timeout=60)
    attempts = [e["attempt"] for e in events if e["event_type"] == "pipeline_started"]
    assert attempts == list(range(1, platform.settings.max_delivery_attempts + 1))
    dead = events[-1]
    assert dead["error"]["code"] == "DEAD_LETTERED"
    assert dead["details"]["delivery_count"] == platform.settings.max_delivery_attempts
    record = platform.run_record(rid, status="FAILED")
    assert record.error_code == "DEAD_LETTERED"
    assert any(n.run_id == rid and n.code == "DEAD_LETTERED" for n in platform.notifications)


def test_same_run_id_twice_runs_once(platform):
    rid = run_id()
    platform.publish("acme_e2e", "testing/consumer/ok", {"seconds": 1}, run_id=rid)
    platform.publish("acme_e2e", "testing/consumer/ok", {"seconds": 1}, run_id=rid)
    platform.follower.wait_for(rid, "pipeline_completed")
    time.sleep(3)
    assert sum(e["event_type"] == "pipeline_started" for e in platform.follower.of(rid)) == 1
    assert [r.status for r in platform.services.runlog.list_runs("acme_e2e") if r.run_id == rid] == ["SUCCESS"]
