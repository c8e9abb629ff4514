"""Events a reader can trust, on the emulators: deterministic event ids (a repeat has the same id), the
final event only after the run's final run-log row is committed, the final event again on a redelivery
of a run that already succeeded, and untrusted rejections filed under the reserved unknown org."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from convergence.consumer.handler import RunHandler
from convergence.consumer.outcome import OutcomeKind
from convergence.infra.apply import apply, delete_subscription, ensure_subscription
from convergence.infra.topology import Topology, follower_subscription
from convergence.pipeline import PipelineLoader
from convergence.runtime.services import Services
from convergence.schemas import EventType, PipelineEvent, RunRequest, decode_pipeline_event
from convergence.schemas.errors import UNKNOWN_ORG
from convergence.schemas.events import event_id_for
from convergence.settings.model import Settings
from convergence.tenancy.onboarding import onboard_org
from convergence.warehouse.bootstrap import bootstrap
from tests.conftest import PUBSUB_NAME_FIELDS
from tests.harness import Platform, make_configs_dir
from tests.support.warehouse import emulator_settings, unique

pytestmark = pytest.mark.emulator

NOOP = "utility/smoke/noop"


def unique_pubsub_names() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {name: f"{Settings.model_fields[name].default}-{suffix}" for name in PUBSUB_NAME_FIELDS}


@pytest.fixture
def services(local_stack, tmp_path):
    settings = emulator_settings(local_stack, pubsub_emulator_host=local_stack.pubsub.host,
                                 local_keyring_path=tmp_path / "keyring.key", configs_dir=make_configs_dir(tmp_path),
                                 processor_packages=["convergence.processors", "tests.fake_processors"],
                                 **unique_pubsub_names())
    services = Services(settings)
    assert bootstrap(services.bigquery, settings).ok
    apply(Topology.from_settings(settings), settings)
    yield services
    services.close()


@pytest.fixture
def follow(services, pull_messages):
    """follow() -> pull(count) of the events published from now on (decoded, in arrival order)."""
    settings = services.settings
    name = f"follow-{uuid.uuid4().hex[:8]}"
    ensure_subscription(follower_subscription(settings, name), settings)

    def pull(count: int, timeout: float = 15.0) -> list[PipelineEvent]:
        return [decode_pipeline_event(m.message.data) for m in pull_messages(settings, name, count, timeout)]

    yield pull
    delete_subscription(name, settings)


def handler_for(services: Any) -> RunHandler:
    return RunHandler(services=services, loader=PipelineLoader(services.settings.configs_dir))


def deliver(services: Any, req: RunRequest, attempt: int, attributes: dict[str, str] | None = None):
    """One delivery of the request's message to a fresh handler (a fresh process would see the same)."""
    async def main():
        handler = handler_for(services)
        try:
            return await handler.handle(req.to_json(), attributes or req.attributes(), f"m-{req.run_id}", attempt)
        finally:
            await handler.aclose()

    return asyncio.run(main())


def test_event_ids_are_deterministic_and_say_which_repeats_are_the_same_event():
    run = "run_0123456789"
    assert event_id_for("pipeline_completed", run, attempt=1, status="SUCCESS") == event_id_for(
        "pipeline_completed", run, attempt=4, status="SUCCESS")  # one success, whatever the attempt
    assert event_id_for("pipeline_completed", run, attempt=1, status="FAILED") != event_id_for(
        "pipeline_completed", run, attempt=2, status="FAILED")  # two attempts that failed: two events
    assert event_id_for("pipeline_completed", run, attempt=1, status="FAILED") != event_id_for(
        "pipeline_completed", run, attempt=1, status="SUCCESS")
    assert event_id_for("step_started", run, step_id="a", attempt=1) != event_id_for(
        "step_started", run, step_id="b", attempt=1)
    assert event_id_for("request_rejected", run, attempt=1, error_code="ORG_NOT_FOUND") == event_id_for(
        "request_rejected", run, attempt=3, error_code="ORG_NOT_FOUND")
    request = RunRequest.create("acme_corp", NOOP)
    built = PipelineEvent.for_request(EventType.STEP_STARTED, request, step_id="noop", attempt=2, status="RUNNING")
    assert built.event_id == event_id_for("step_started", request.run_id, step_id="noop", attempt=2)
    assert decode_pipeline_event(built.to_json()).event_id == built.event_id  # a decoded event keeps its id


def test_final_event_is_published_after_the_final_run_log_row_is_committed(services, follow):
    org = unique("ev")
    onboard_org(services.bigquery, services.settings, services.cipher, org, "SCALE")
    events, runlog = services.events, services.runlog
    seen: list[str | None] = []

    class Watching:  # the real publisher; at the moment of the final publish, what does the run log say?
        def publish_event(self, event: PipelineEvent):
            if event.event_type is EventType.PIPELINE_COMPLETED:
                record = runlog.latest_run(event.run_id, event.org_slug)
                seen.append(record.status if record else None)
            return events.publish_event(event)

        def __getattr__(self, name: str) -> Any:
            return getattr(events, name)

    services.events = Watching()
    # The first step lasts long enough that the commit of the start row is over before the run ends:
    # only the handler's final commit can have written the final row.
    req = RunRequest.create(org, "testing/consumer/ok", {"seconds": 1})
    outcome = deliver(services, req, 1)
    assert outcome.kind is OutcomeKind.SUCCEEDED, outcome
    assert seen == ["SUCCESS"]  # the row was in BigQuery before the event left
    received = [e for e in follow(6) if e.run_id == req.run_id]
    assert [e.event_type.value for e in received][-1] == "pipeline_completed" and len(received) == 6


def test_redelivered_completed_run_publishes_the_same_final_event(services, follow):
    org = unique("ev")
    onboard_org(services.bigquery, services.settings, services.cipher, org, "SCALE")
    req = RunRequest.create(org, NOOP)
    first = deliver(services, req, 1)
    assert first.kind is OutcomeKind.SUCCEEDED, first
    again = deliver(services, req, 2)
    assert (again.kind, again.code) == (OutcomeKind.DUPLICATE, "ALREADY_SUCCEEDED")

    received = [e for e in follow(5) if e.run_id == req.run_id]
    finals = [e for e in received if e.event_type is EventType.PIPELINE_COMPLETED]
    assert len(finals) == 2 and finals[0].status == "SUCCESS"
    assert finals[0].event_id == finals[1].event_id
    assert finals[0].to_dict() == finals[1].to_dict()  # the republished copy says exactly the same
    assert sum(e.event_type is EventType.PIPELINE_STARTED for e in received) == 1  # not run again
    assert len({e.event_id for e in received}) == 4  # a reader deduplicating on event_id sees one run


def test_a_final_event_lost_after_the_commit_is_published_by_the_redelivery(services, follow, local_stack):
    org = unique("ev")
    onboard_org(services.bigquery, services.settings, services.cipher, org, "SCALE")
    req = RunRequest.create(org, NOOP)
    # The first process commits the run log, then cannot publish (its events topic does not exist): as if
    # it had died between the commit and the publish.
    broken = Services(services.settings.model_copy(update={"events_topic": f"absent-{uuid.uuid4().hex[:8]}"}))
    try:
        first = deliver(broken, req, 1)
    finally:
        broken.close()
    assert (first.kind, first.code) == (OutcomeKind.RETRY, "EVENTS_UNAVAILABLE")  # the message comes back
    assert services.runlog.latest_run(req.run_id, org).status == "SUCCESS"

    again = deliver(services, req, 2)
    assert (again.kind, again.code) == (OutcomeKind.DUPLICATE, "ALREADY_SUCCEEDED")
    [final] = [e for e in follow(1) if e.run_id == req.run_id]
    assert final.event_type is EventType.PIPELINE_COMPLETED and final.status == "SUCCESS"
    assert final.event_id == event_id_for("pipeline_completed", req.run_id, status="SUCCESS")
    assert final.attempt == 1 and final.rows_processed == services.runlog.latest_run(req.run_id, org).rows_processed


def test_rejection_for_an_org_that_does_not_exist_is_filed_under_the_unknown_org(services, follow):
    req = RunRequest.create(unique("ghost"), NOOP)
    outcome = deliver(services, req, 1)
    assert (outcome.kind, outcome.code, outcome.org_slug) == (OutcomeKind.REJECTED, "ORG_NOT_FOUND", UNKNOWN_ORG)
    assert services.runlog.latest_run(req.run_id, UNKNOWN_ORG).error_code == "ORG_NOT_FOUND"
    assert services.runlog.latest_run(req.run_id, req.org_slug) is None
    [event] = [e for e in follow(1) if e.run_id == req.run_id]
    assert event.org_slug == UNKNOWN_ORG and event.error.code == "ORG_NOT_FOUND"


# ---- through Pub/Sub, with a running consumer ----


@pytest.fixture(scope="module")
def platform(local_stack, tmp_path_factory):
    platform = Platform(local_stack, tmp_path_factory.mktemp("events"))
    platform.onboard("victim_ev")
    platform.onboard("acme_ev")
    platform.start_consumer()
    yield platform
    platform.close()


@pytest.mark.slow
def test_attribute_mismatch_is_filed_under_the_unknown_org_never_the_attributes_org(platform):
    req = RunRequest.create("acme_ev", "testing/consumer/ok", run_id=f"run_{uuid.uuid4().hex}")
    # Body says acme_ev, the attributes say victim_ev: neither can be trusted.
    platform.publish_raw(req.to_json(), **{**req.attributes(), "org_slug": "victim_ev"})
    [event] = platform.follower.wait_for(req.run_id, "request_rejected")
    assert event["error"]["code"] == "ATTRIBUTE_MISMATCH" and event["org_slug"] == UNKNOWN_ORG
    runlog = platform.services.runlog
    record = runlog.latest_run(req.run_id, UNKNOWN_ORG)
    assert record is not None and (record.status, record.error_code) == ("REJECTED", "ATTRIBUTE_MISMATCH")
    assert runlog.latest_run(req.run_id, "victim_ev") is None
    assert runlog.latest_run(req.run_id, "acme_ev") is None
    assert all(r.run_id != req.run_id for r in runlog.list_runs("victim_ev"))


@pytest.mark.slow
def test_a_run_published_twice_announces_its_success_twice_with_one_id(platform, pull_messages):
    settings = platform.settings
    name = f"follow-{uuid.uuid4().hex[:8]}"
    ensure_subscription(follower_subscription(settings, name), settings)
    rid = f"run_{uuid.uuid4().hex}"
    platform.publish("acme_ev", "testing/consumer/ok", run_id=rid)
    platform.follower.wait_for(rid, "pipeline_completed")
    platform.publish("acme_ev", "testing/consumer/ok", run_id=rid)  # a redelivery, as Pub/Sub may make

    mine: list[dict] = []
    try:
        for _ in range(15):  # each pull waits up to 2 s for messages on the emulator
            mine += [e for m in pull_messages(settings, name, 50, timeout=2)
                     if (e := json.loads(m.message.data))["run_id"] == rid]
            if sum(e["event_type"] == "pipeline_completed" for e in mine) >= 2:
                break
    finally:
        delete_subscription(name, settings)
    finals = [e for e in mine if e["event_type"] == "pipeline_completed"]
    assert len(finals) == 2, [e["event_type"] for e in mine]
    assert finals[0]["event_id"] == finals[1]["event_id"] and finals[0] == finals[1]
    assert sum(e["event_type"] == "pipeline_started" for e in mine) == 1  # ran once


def test_an_unreadable_dead_letter_is_filed_under_the_unknown_org(services, follow):
    from convergence.consumer.dead_letters import DELIVERY_COUNT, DeadLetterHandler

    org = unique("dl")
    onboard_org(services.bigquery, services.settings, services.cipher, org, "SCALE")
    run_id = f"run_{uuid.uuid4().hex}"
    outcome = asyncio.run(DeadLetterHandler(services).handle(
        b"{not json", {"org_slug": org, "run_id": run_id, DELIVERY_COUNT: "5"}, "m-dead-1", 1))
    assert (outcome.code, outcome.org_slug) == ("DEAD_LETTERED", UNKNOWN_ORG)
    assert services.runlog.latest_run(run_id, UNKNOWN_ORG).error_code == "DEAD_LETTERED"
    assert services.runlog.latest_run(run_id, org) is None
    [event] = [e for e in follow(1) if e.run_id == run_id]
    assert event.org_slug == UNKNOWN_ORG


def test_the_unknown_org_slug_is_reserved(services):
    with pytest.raises(ValueError, match="reserved"):
        onboard_org(services.bigquery, services.settings, services.cipher, UNKNOWN_ORG, "SCALE")
