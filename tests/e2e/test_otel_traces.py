"""OpenTelemetry traces on the local stack: one run's publish, receive, run, steps and events share one
trace id (the run's), each span under the right parent; with tracing off nothing is traced."""

import threading
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convergence.observability import otel
from convergence.observability.tracing import new_trace_id
from convergence.publisher.requests import RequestPublisher
from convergence.schemas import RunRequest
from tests.harness import Platform

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


class Spans(InMemorySpanExporter):
    """In-memory exporter that can be awaited: `wait(predicate)` returns once the ended spans satisfy it."""

    def __init__(self):
        super().__init__()
        self.changed = threading.Condition()

    def export(self, spans):
        result = super().export(spans)
        with self.changed:
            self.changed.notify_all()
        return result

    def wait(self, predicate, timeout=30.0):
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self.get_finished_spans()), timeout=timeout):
                names = sorted(s.name for s in self.get_finished_spans())
                raise AssertionError(f"spans never matched; have {names}")
        return self.get_finished_spans()


@pytest.fixture(scope="module")
def traced(local_stack, tmp_path_factory):
    spans = Spans()
    otel.configure_tracing(exporter=spans)
    platform = Platform(local_stack, tmp_path_factory.mktemp("otel"))
    platform.onboard("acme_otel")
    platform.start_consumer()
    yield platform, spans
    platform.close()
    otel.disable()


def _hex(span_context):
    return format(span_context.trace_id, "032x")


def test_one_run_is_one_trace_from_publish_to_events(traced):
    platform, spans = traced
    trace_id = new_trace_id()
    run_id = f"run_{uuid.uuid4().hex}"
    platform.services.requests.publish_run("acme_otel", "testing/consumer/ok", {}, run_id=run_id,
                                           trace_id=trace_id)
    platform.follower.wait_for(run_id, "pipeline_completed")
    events_topic = platform.settings.events_topic
    follower = platform.follower.name

    def ours(finished):
        return [s for s in finished if _hex(s.context) == trace_id]

    def complete(finished):  # every event received by the follower, and the run span ended
        mine = ours(finished)
        return (sum(1 for s in mine if s.name == f"{follower} subscribe") == 6
                and any(s.name.startswith("run ") for s in mine))

    mine = ours(spans.wait(complete))
    by_id = {s.context.span_id: s for s in mine}

    def parent(span):
        assert span.parent is not None, f"{span.name} has no parent"
        return by_id[span.parent.span_id]

    def one(name):
        found = [s for s in mine if s.name == name]
        assert len(found) == 1, (name, [s.name for s in mine])
        return found[0]

    # publish -> receive -> run: the CLI's create span is the trace's root, with the run's trace id.
    publish = one(f"{platform.settings.requests_topic} create")
    assert publish.parent is None and publish.kind is trace.SpanKind.PRODUCER
    receive = one(f"{platform.settings.requests_subscription} subscribe")
    assert parent(receive) is publish and receive.kind is trace.SpanKind.CONSUMER
    run = one("run testing/consumer/ok")
    assert parent(run) is receive
    assert run.attributes["convergence.run_id"] == run_id and run.attributes["convergence.status"] == "SUCCESS"
    assert run.attributes["convergence.rows_processed"] == 7

    # steps under the run, in the order they ran
    first, second = one("step first"), one("step second")
    assert parent(first) is run and parent(second) is run
    assert first.end_time <= second.start_time
    assert (first.attributes["convergence.status"], second.attributes["convergence.rows_processed"]) == ("SUCCESS", 4)

    # events: each publish is a child of the span it happened in, and its receive a child of the publish
    # (the context went through the message attributes)
    creates = [s for s in mine if s.name == f"{events_topic} create"]
    assert len(creates) == 6
    parents = sorted(parent(s).name for s in creates)
    assert parents == ["run testing/consumer/ok"] * 2 + ["step first"] * 2 + ["step second"] * 2
    received = [s for s in mine if s.name == f"{follower} subscribe"]
    assert sorted(parent(s).context.span_id for s in received) == sorted(s.context.span_id for s in creates)

    # and the run log carries the same trace id
    assert platform.run_record(run_id, status="SUCCESS").trace_id == trace_id


def test_a_foreign_traceparent_attribute_parents_the_run(traced):
    """A publisher without the client's tracing (another service) sends only `traceparent`: the run joins
    that trace, and its trace id is the run's."""
    platform, spans = traced
    trace_id, caller_span = new_trace_id(), uuid.uuid4().hex[:16]
    run_id = f"run_{uuid.uuid4().hex}"
    body = RunRequest.create("acme_otel", "testing/consumer/ok", {}, run_id=run_id, trace_id=trace_id)
    attributes = {**body.attributes(), "traceparent": f"00-{trace_id}-{caller_span}-01"}
    otel.disable()  # a publisher built with tracing off, as another service's would be
    try:
        with RequestPublisher(platform.settings) as foreign:
            foreign.publish_raw(body.to_json(), attributes).result(timeout=30)
    finally:
        otel.configure_tracing(exporter=spans)
    platform.follower.wait_for(run_id, "pipeline_completed")
    finished = spans.wait(lambda done: any(s.name.startswith("run ") and _hex(s.context) == trace_id
                                           and s.attributes.get("convergence.run_id") == run_id for s in done))
    run = next(s for s in finished if s.attributes.get("convergence.run_id") == run_id and s.name.startswith("run "))
    # The client's subscribe span has the traceparent's trace too (it reads only googclient_ attributes, so
    # it started a trace of its own): the run's parent is the caller's span, the subscribe span a link.
    assert _hex(run.context) == trace_id
    assert format(run.parent.span_id, "016x") == caller_span
    assert len(run.links) == 1 and _hex(run.links[0].context) != trace_id


def test_tracing_off_wraps_nothing(traced):
    _, spans = traced
    sentinel = object()
    otel.disable()
    try:
        assert otel.TracingObserver.wrap(sentinel, None) is sentinel
        assert otel.delivery_context(object()) is None
        with otel.run_trace(new_trace_id()):
            assert not trace.get_current_span().get_span_context().is_valid
    finally:
        otel.configure_tracing(exporter=spans)


def test_cloud_trace_without_credentials_is_a_clear_credentials_error(monkeypatch):
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    from convergence.settings.model import load_settings

    def no_credentials(*args, **kwargs):
        raise DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    was = otel.enabled()
    with pytest.raises(DefaultCredentialsError, match=r"^TRACING_EXPORTER=cloud_trace needs Google credentials"):
        otel.configure_tracing(load_settings(tracing_exporter="cloud_trace"))
    assert otel.enabled() is was  # nothing turned on


def test_tracing_exporter_console_traces_a_real_consumer_process(local_stack, tmp_path):
    """TRACING_EXPORTER alone turns tracing on in `convergence consume`: its run span, with the run's trace
    id, goes to stderr; SIGTERM still exits 0."""
    import json
    import signal

    from tests.harness import ConsumerProcess

    platform = Platform(local_stack, tmp_path / "platform")
    try:
        platform.onboard("acme_otel_proc")
        log_path = tmp_path / "consumer.log"
        consumer = ConsumerProcess(platform.settings, log_path, TRACING_EXPORTER="console")
        try:
            trace_id, run_id = new_trace_id(), f"run_{uuid.uuid4().hex}"
            platform.services.requests.publish_run("acme_otel_proc", "testing/consumer/ok", {}, run_id=run_id,
                                                   trace_id=trace_id)
            platform.follower.wait_for(run_id, "pipeline_completed", timeout=60)
            consumer.signal(signal.SIGTERM)
            assert consumer.wait(30) == 0
        finally:
            consumer.kill()
        text = log_path.read_text()
        decoder, spans, at = json.JSONDecoder(), [], 0
        while (at := text.find('{\n    "name"', at)) >= 0:  # the console exporter's indented span JSON
            span, at = decoder.raw_decode(text, at)
            spans.append(span)
        run = [s for s in spans if s["name"] == "run testing/consumer/ok"]
        assert len(run) == 1 and run[0]["context"]["trace_id"] == f"0x{trace_id}"
        assert run[0]["attributes"]["convergence.run_id"] == run_id
        steps = [s for s in spans if s["name"].startswith("step ")]
        assert sorted(s["name"] for s in steps) == ["step first", "step second"]
        assert {s["parent_id"] for s in steps} == {run[0]["context"]["span_id"]}
    finally:
        platform.close()


def test_a_push_delivery_joins_the_publishers_trace(traced, local_stack, tmp_path):
    """Push has no client receive span: the run span's parent is the publish span, read from the
    `googclient_traceparent` attribute the push envelope carries."""
    from convergence.consumer.serving import build_push_app
    from convergence.devstack.ports import free_port
    from convergence.runtime import Services
    from tests.e2e.test_push_e2e import PushServer

    _, spans = traced
    port = free_port()
    platform = Platform(local_stack, tmp_path, push_endpoint=f"http://127.0.0.1:{port}/pubsub/push",
                        push_verify_token=False)
    services = Services(platform.settings)
    server = PushServer(build_push_app(platform.settings, services), port)
    server.start()
    try:
        platform.onboard("acme_otel_push")
        trace_id, run_id = new_trace_id(), f"run_{uuid.uuid4().hex}"
        platform.services.requests.publish_run("acme_otel_push", "testing/consumer/ok", {}, run_id=run_id,
                                               trace_id=trace_id)
        platform.follower.wait_for(run_id, "pipeline_completed", timeout=60)
        finished = spans.wait(lambda done: any(s.attributes.get("convergence.run_id") == run_id
                                               and s.name.startswith("run ") for s in done))
    finally:
        server.stop()
        services.close()
        platform.close()
    mine = {s.context.span_id: s for s in finished if _hex(s.context) == trace_id}
    run = next(s for s in mine.values() if s.name.startswith("run "))
    publish = mine[run.parent.span_id]
    assert publish.name == f"{platform.settings.requests_topic} create" and publish.parent is None
    assert sorted(s.name for s in mine.values() if s.parent and s.parent.span_id == run.context.span_id
                  and s.name.startswith("step ")) == ["step first", "step second"]


def test_the_http_callers_span_parents_the_publish(traced, local_stack, tmp_path):
    """POST to the run door with a `traceparent`: the run request's publish span is a child of the
    caller's span, and the run's spans follow in the same trace."""
    from tests.unit.api.test_http_door import Server, door_app

    _, spans = traced
    platform = Platform(local_stack, tmp_path)
    app, door = door_app(platform)
    server = Server(app)
    try:
        key = platform.onboard("acme_otel_door").api_key
        platform.start_consumer()
        trace_id, caller = new_trace_id(), uuid.uuid4().hex[:16]
        got, _, answer = server.call("POST", "/api/v1/pipelines/run/acme_otel_door/testing/consumer/ok", {}, {
            "X-API-Key": key, "Content-Type": "application/json", "traceparent": f"00-{trace_id}-{caller}-01"})
        assert got == 202, answer
        run_id = answer["run_id"]
        platform.follower.wait_for(run_id, "pipeline_completed", timeout=60)
        finished = spans.wait(lambda done: any(s.attributes.get("convergence.run_id") == run_id
                                               and s.name.startswith("run ") for s in done))
    finally:
        server.close()
        door.services.close()
        platform.close()
    mine = {s.context.span_id: s for s in finished if _hex(s.context) == trace_id}
    publish = next(s for s in mine.values() if s.name == f"{platform.settings.requests_topic} create")
    assert format(publish.parent.span_id, "016x") == caller
    run = next(s for s in mine.values() if s.name.startswith("run "))
    assert mine[mine[run.parent.span_id].parent.span_id] is publish  # run <- subscribe <- publish
