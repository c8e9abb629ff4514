"""The HTTP run door over real HTTP (the `serve` app on a port): keys, body validation, pipeline lookup,
rate limits and request ids; every refused call publishes nothing; a good call is queued (202) and runs."""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import threading
import time
import uuid
from concurrent import futures
from typing import Any

import pytest
from pydantic import SecretStr

from convergence.api import ApiDoor
from convergence.api.ratelimit import RateLimiter
from convergence.devstack.ports import free_port

pytestmark = [pytest.mark.emulator]
ROOT_KEY = "root-" + "k" * 40
OK = "testing/consumer/ok"

# ---- unit ----------------------------------------------------------------------------------------------


def test_token_bucket():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.take("a") == 0 and limiter.take("a") == 0
    assert limiter.take("a") == 30  # one token every 30 s at 2/min
    assert limiter.take("b") == 0  # per key
    now[0] = 30.0
    assert limiter.take("a") == 0 and limiter.take("a") == 30


def test_root_key_compare():
    from convergence.api.auth import AuthError, check_root_key
    from convergence.settings.model import load_settings

    settings = load_settings(ca_root_api_key=ROOT_KEY)
    check_root_key(settings, ROOT_KEY)
    for presented, status in ((None, 401), ("", 401), ("x", 403), (ROOT_KEY + "x", 403)):
        with pytest.raises(AuthError) as error:
            check_root_key(settings, presented)
        assert error.value.status == status
    with pytest.raises(AuthError) as error:
        check_root_key(load_settings(), ROOT_KEY)
    assert error.value.status == 403


# ---- the server ----------------------------------------------------------------------------------------


class Server:
    """run_server (the one `serve` uses) on its own loop in a thread."""

    def __init__(self, app: Any):
        from convergence.consumer.http_app import run_server

        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        ready = threading.Event()

        async def main() -> None:
            self.stop_event = asyncio.Event()
            ready.set()
            await run_server(app, "127.0.0.1", self.port, stop=self.stop_event, handle_signals=False)

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),), daemon=True)
        self.thread.start()
        ready.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.call("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        payload = response.read()
        connection.close()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload.decode()
        return response.status, dict(response.headers), parsed

    def close(self) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)


def door_app(platform: Any, **overrides: Any) -> tuple[Any, Any]:
    from convergence.consumer.serving import build_push_app
    from convergence.runtime import Services

    settings = platform.settings.model_copy(update={"push_verify_token": False,
                                                    "ca_root_api_key": SecretStr(ROOT_KEY), **overrides})
    services = Services(settings)  # its own, as the serve process has
    app = build_push_app(settings, services)
    door = ApiDoor(settings, services)
    door.register(app)
    return app, door


class StubRequests:
    """A publisher that records instead of publishing (rate-limit and QUEUED tests)."""

    def __init__(self):
        self.published = []

    def publish_request(self, request):
        self.published.append(request)
        future: futures.Future[str] = futures.Future()
        future.set_result("1")
        return future


@pytest.fixture(scope="module")
def platform(local_stack, tmp_path_factory):
    from convergence.infra.apply import ensure_subscription
    from convergence.infra.topology import SubscriptionSpec
    from tests.harness import Platform

    platform = Platform(local_stack, tmp_path_factory.mktemp("door"))
    configs = platform.settings.configs_dir
    shutil.copy(configs / "testing" / "consumer" / "ok.yml", configs / "testing" / "flat.yml")  # testing//flat
    platform.keys = {org: platform.onboard(org).api_key for org in ("acme_door", "other_door")}
    platform.tap = f"tap-{uuid.uuid4().hex[:8]}"  # sees every run request published
    ensure_subscription(SubscriptionSpec(platform.tap, platform.settings.requests_topic, 60), platform.settings)
    platform.start_consumer()
    yield platform
    platform.close()


@pytest.fixture(scope="module")
def server(platform):
    app, door = door_app(platform)
    server = Server(app)
    server.door = door
    yield server
    server.close()


def run_path(org: str, pipeline: str = OK) -> str:
    provider, domain, name = pipeline.split("/")
    return f"/api/v1/pipelines/run/{org}/{provider}/{domain}/{name}"


def key_of(platform, org="acme_door") -> dict[str, str]:
    return {"X-API-Key": platform.keys[org], "Content-Type": "application/json"}


# ---- the run door --------------------------------------------------------------------------------------


def test_refused_calls_publish_nothing_and_a_good_call_runs(platform, server, pull_messages):
    acme = platform.keys["acme_door"]
    wrong = "acme_door_api_" + "x" * 16
    refused = [
        ({}, {}, 401, "API_KEY_MISSING"),
        ({"X-API-Key": wrong}, {}, 401, "API_KEY_INVALID"),
        ({"X-API-Key": "not-a-key"}, {}, 401, "API_KEY_INVALID"),
        ({"X-API-Key": platform.keys["other_door"]}, {}, 403, "API_KEY_WRONG_ORG"),
        ({"X-API-Key": acme}, {"seconds": 0}, 422, "INVALID_BODY"),  # unknown field (flat, not a known one)
        ({"X-API-Key": acme}, {"parameters": {}, "priority": 1}, 422, "INVALID_BODY"),
        ({"X-API-Key": acme}, {"date": "2025-02-30"}, 422, "INVALID_BODY"),
        ({"X-API-Key": acme}, {"parameters": {"run_id": "x"}}, 422, "SCHEMA_INVALID"),
        ({"X-API-Key": acme}, {"trigger": "scheduled"}, 422, "INVALID_BODY"),
        ({"X-API-Key": acme, "X-Request-ID": "bad id with spaces"}, {}, 400, "INVALID_REQUEST_ID"),
    ]
    for headers, body, status, code in refused:
        got, response_headers, answer = server.call("POST", run_path("acme_door"), body, headers)
        assert (got, answer["code"]) == (status, code), (headers, body, answer)
        assert answer["request_id"] == response_headers["X-Request-ID"]
    first = server.call("POST", run_path("acme_door"), body={"parameters": {}, "priority": 1}, headers=key_of(platform))
    assert "unknown field" in json.dumps(first[2]["errors"])
    for path, code in ((run_path("acme_door", "testing/consumer/nope"), "UNKNOWN_PIPELINE"),
                       (run_path("acme_door", "testing/Consumer/ok"), "INVALID_PIPELINE_PATH"),
                       (run_path("acme_door", "testing/consumer/ok.yml"), "INVALID_PIPELINE_PATH")):
        got, _, answer = server.call("POST", path, {}, key_of(platform))
        assert (got, answer["code"]) == (404, code), (path, answer)
    assert server.call("POST", "/api/v1/pipelines/run/acme_door/testing/consumer/..", {}, key_of(platform))[0] == 404
    got, _, answer = server.call("POST", run_path("acme_door"), headers=key_of(platform), raw=b"{nope")
    assert (got, answer["code"]) == (400, "INVALID_JSON")

    # a good call, with the old API's flat body and a request id of our own
    request_id = f"req-{uuid.uuid4()}"
    got, headers, answer = server.call("POST", run_path("acme_door"), {"date": "2026-01-15"},
                                       {**key_of(platform), "X-Request-ID": request_id})
    assert got == 202, answer
    assert answer["status"] == "QUEUED" and headers["X-Request-ID"] == request_id
    run_id = answer["run_id"]
    assert headers["Location"] == f"/api/v1/pipelines/runs/{run_id}"
    events = platform.follower.wait_for(run_id, "pipeline_completed")
    assert events[-1]["status"] == "SUCCESS" and events[-1]["trace_id"] == request_id

    # exactly one request reached the topic: the good one
    messages = pull_messages(platform.settings, platform.tap, 10, timeout=3)
    assert [m.message.attributes["run_id"] for m in messages] == [run_id]
    body = json.loads(messages[0].message.data)
    assert body["parameters"] == {"date": "2026-01-15"} and body["trace_id"] == request_id
    assert body["requested_by"] == f"api:acme_door:key-{platform.keys['acme_door'][-4:]}"

    # its status, for that org only
    record = platform.run_record(run_id, status="SUCCESS")
    got, _, run = server.call("GET", f"/api/v1/pipelines/runs/{run_id}", headers=key_of(platform))
    assert got == 200 and run["status"] == "SUCCESS" and run["rows_processed"] == record.rows_processed == 7
    assert [(s["step_id"], s["status"], s["rows_processed"]) for s in run["steps"]] == [
        ("first", "SUCCESS", 3), ("second", "SUCCESS", 4)]
    got, _, answer = server.call("GET", f"/api/v1/pipelines/runs/{run_id}", headers=key_of(platform, "other_door"))
    assert (got, answer["code"]) == (404, "RUN_NOT_FOUND")
    assert server.call("GET", f"/api/v1/pipelines/runs/{run_id}")[0] == 401


def test_empty_domain_and_generated_request_id(platform, server):
    got, headers, answer = server.call("POST", "/api/v1/pipelines/run/acme_door/testing//flat",
                                       {"parameters": {"seconds": 0}}, key_of(platform))
    assert got == 202, answer
    assert answer["pipeline"] == "testing//flat"
    uuid.UUID(headers["X-Request-ID"])  # made up when absent, and used as the trace id
    assert answer["trace_id"] == headers["X-Request-ID"]
    events = platform.follower.wait_for(answer["run_id"], "pipeline_completed")
    assert events[-1]["status"] == "SUCCESS"


def test_traceparent_header_becomes_the_run_trace_id(platform, server):
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    got, headers, answer = server.call("POST", "/api/v1/pipelines/run/acme_door/testing//flat",
                                       {"parameters": {"seconds": 0}},
                                       {**key_of(platform), "traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    assert got == 202, answer
    assert answer["trace_id"] == trace
    events = platform.follower.wait_for(answer["run_id"], "pipeline_completed")
    assert {e["trace_id"] for e in events} == {trace}


def test_queued_before_the_consumer_writes_anything(platform):
    app, door = door_app(platform)
    door.services.__dict__["requests"] = stub = StubRequests()  # queued, never delivered
    server = Server(app)
    try:
        got, _, answer = server.call("POST", run_path("acme_door"), {}, key_of(platform))
        assert got == 202 and len(stub.published) == 1
        got, _, status = server.call("GET", f"/api/v1/pipelines/runs/{answer['run_id']}", headers=key_of(platform))
        assert got == 200 and status["status"] == "QUEUED" and status["pipeline"] == OK
        assert server.call("GET", f"/api/v1/pipelines/runs/{answer['run_id']}",
                           headers=key_of(platform, "other_door"))[0] == 404
        assert server.call("GET", "/api/v1/pipelines/runs/run_doesnotexist", headers=key_of(platform))[0] == 404
    finally:
        server.close()


def test_rate_limits_answer_429_with_retry_after(platform):
    app, door = door_app(platform, rate_limit_requests_per_minute=2, rate_limit_global_requests_per_minute=4)
    door.services.__dict__["requests"] = stub = StubRequests()
    server = Server(app)
    try:
        path = run_path("acme_door")
        statuses = [server.call("POST", path, {}, key_of(platform))[0] for _ in range(2)]
        assert statuses == [202, 202]
        got, headers, answer = server.call("POST", path, {}, key_of(platform))
        # a token every 30 s at 2/min, less the seconds a loaded machine took since the first call
        assert (got, answer["code"]) == (429, "RATE_LIMITED") and 25 <= int(headers["Retry-After"]) <= 30
        assert server.call("POST", run_path("other_door"), {}, key_of(platform, "other_door"))[0] == 202
        assert len(stub.published) == 3  # the refused call published nothing
        # 4 requests so far (the refused one counts globally); the global limit (4/min) refuses the 5th
        got, headers, answer = server.call("POST", run_path("other_door"), {}, key_of(platform, "other_door"))
        assert got == 429 and int(headers["Retry-After"]) >= 1 and "service" in answer["detail"]
        assert len(stub.published) == 3
    finally:
        server.close()


def test_the_org_gate_refuses_at_the_door_before_anything_is_published(platform):
    platform.keys["paused_door"] = platform.onboard("paused_door", status="SUSPENDED").api_key
    platform.keys["starter_door"] = platform.onboard("starter_door", plan="STARTER").api_key
    app, door = door_app(platform, gate_cache_seconds=300)
    door.services.__dict__["requests"] = stub = StubRequests()
    server = Server(app)
    try:
        got, headers, answer = server.call("POST", run_path("paused_door"), {}, key_of(platform, "paused_door"))
        assert (got, answer["code"]) == (403, "SUBSCRIPTION_SUSPENDED") and "Retry-After" not in headers
        assert not stub.published
        # STARTER allows 10 runs a day: the ten queued here count while the standing is cached (none is
        # in the run log: the stub never delivers), so the 11th is refused at once.
        starter = run_path("starter_door")
        statuses = [server.call("POST", starter, {}, key_of(platform, "starter_door"))[0] for _ in range(10)]
        assert statuses == [202] * 10
        got, headers, answer = server.call("POST", starter, {}, key_of(platform, "starter_door"))
        assert (got, answer["code"]) == (429, "QUOTA_EXCEEDED") and "10 of 10" in answer["detail"]
        assert 1 <= int(headers["Retry-After"]) <= 86_400  # at the next UTC midnight
        assert len(stub.published) == 10
        assert server.call("POST", run_path("acme_door"), {}, key_of(platform))[0] == 202  # other orgs unaffected
    finally:
        server.close()


def test_a_pipeline_the_org_disabled_is_refused_at_the_door(platform):
    from convergence.tenancy import pipeline_configs
    from convergence.tenancy.central import Central

    platform.keys["picky_door"] = platform.onboard("picky_door").api_key
    central = Central(platform.services.bigquery, platform.settings)
    pipeline_configs.write_config(central, "picky_door", OK, pipeline_id=None, enabled=False)
    app, door = door_app(platform)
    door.services.__dict__["requests"] = stub = StubRequests()
    server = Server(app)
    try:
        got, _, answer = server.call("POST", run_path("picky_door"), {}, key_of(platform, "picky_door"))
        assert (got, answer["code"]) == (403, "PIPELINE_DISABLED") and not stub.published
        assert server.call("POST", run_path("picky_door", "testing//flat"), {},
                           key_of(platform, "picky_door"))[0] == 202  # its other pipelines still run
    finally:
        server.close()


async def test_the_door_lets_a_run_through_when_the_gate_cannot_be_read():
    from google.api_core import exceptions

    from convergence.api.standing import DoorGate, seconds_until_quota_reset

    class Unreachable:
        def standings(self, orgs):
            raise exceptions.ServiceUnavailable("BigQuery is down")

    assert await DoorGate(Unreachable, ttl_seconds=5).check("acme") is None  # the consumer's gate decides
    from datetime import UTC, datetime

    assert seconds_until_quota_reset(datetime(2026, 12, 2, 23, 59, 30, tzinfo=UTC)) == 30


def test_cors_only_for_the_configured_origins(platform, server):
    app, door = door_app(platform, cors_origins=["https://app.example.com"])
    door.services.__dict__["requests"] = stub = StubRequests()
    cors = Server(app)
    try:
        preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "X-API-Key, Content-Type"}
        got, headers, _ = cors.call("OPTIONS", run_path("acme_door"), headers=preflight)
        assert got == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert "X-API-KEY" in headers["Access-Control-Allow-Headers"].upper()
        assert "Access-Control-Allow-Credentials" not in headers
        got, headers, _ = cors.call("OPTIONS", run_path("acme_door"), headers={**preflight,
                                                                               "Origin": "https://evil.example"})
        assert got == 403 and "Access-Control-Allow-Origin" not in headers
        got, headers, _ = cors.call("POST", run_path("acme_door"), {},
                                    {**key_of(platform), "Origin": "https://app.example.com"})
        assert got == 202 and headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert "X-Request-ID" in headers["Access-Control-Expose-Headers"] and len(stub.published) == 1
        got, headers, _ = cors.call("POST", run_path("acme_door"), {},
                                    {**key_of(platform), "Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in headers  # the browser refuses to hand it the answer
    finally:
        cors.close()
    # Not configured (the default): no preflight is answered, no answer carries CORS headers.
    got, headers, _ = server.call("OPTIONS", run_path("acme_door"), headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"})
    assert got in (403, 405) and "Access-Control-Allow-Origin" not in headers


def test_cors_origins_are_checked_and_a_wildcard_is_refused_in_production():
    from convergence.settings.model import SettingsError, load_settings
    from convergence.settings.production import production_problems

    for bad in (["app.example.com"], ["https://app.example.com/path"], ["ftp://x.example"]):
        with pytest.raises(SettingsError, match="is not an origin"):
            load_settings(cors_origins=bad)
    assert 'CORS_ORIGINS must list the allowed origins in production, not "*"' in production_problems(
        load_settings(cors_origins=["*"]))


def test_the_old_two_segment_run_urls_are_aliases(platform):
    app, door = door_app(platform)
    door.services.__dict__["requests"] = stub = StubRequests()
    server = Server(app)
    try:
        for path, pipeline in (("openai/usage_cost", "openai/cost/usage_cost"), ("gcp/billing", "gcp/cost/billing")):
            got, _, answer = server.call("POST", f"/api/v1/pipelines/run/acme_door/{path}", {}, key_of(platform))
            assert (got, answer["pipeline"]) == (202, pipeline), answer
        assert [r.pipeline for r in stub.published] == ["openai/cost/usage_cost", "gcp/cost/billing"]
    finally:
        server.close()


def test_verified_keys_are_cached_briefly(platform, server):
    door = server.door
    before = door.auth.lookups
    for _ in range(3):
        assert server.call("GET", "/api/v1/pipelines/runs/run_unknown123", headers=key_of(platform))[0] == 404
    assert door.auth.lookups - before <= 1


# ---- procedures (X-CA-Root-Key) ------------------------------------------------------------------------


def test_procedure_routes_need_the_root_key(server, platform):
    assert server.call("GET", "/api/v1/procedures/files")[0] == 401
    assert server.call("GET", "/api/v1/procedures/files", headers={"X-CA-Root-Key": "wrong"})[0] == 403
    assert server.call("GET", "/api/v1/procedures/files", headers={"X-API-Key": platform.keys["acme_door"]})[0] == 401
    root = {"X-CA-Root-Key": ROOT_KEY}
    got, _, files = server.call("GET", "/api/v1/procedures/files", headers=root)
    assert got == 200 and "calculate_subscription_cost" in [f["name"] for f in files["files"]]
    assert server.call("POST", "/api/v1/procedures/sync", {"force": True, "extra": 1}, root)[0] == 422
    got, _, report = server.call("POST", "/api/v1/procedures/sync", {}, root)
    assert got == 200 and "calculate_subscription_cost" in report["created"] + report["updated"] + report["unchanged"]
    got, _, procedure = server.call("GET", "/api/v1/procedures/calculate_subscription_cost", headers=root)
    assert got == 200 and procedure["name"] == "calculate_subscription_cost"
    got, _, listed = server.call("GET", "/api/v1/procedures", headers=root)
    assert got == 200 and "calculate_subscription_cost" in [p["name"] for p in listed["procedures"]]
    assert server.call("POST", "/api/v1/procedures/calculate_subscription_cost", {}, root)[0] == 200
    assert server.call("DELETE", "/api/v1/procedures/calculate_subscription_cost", headers=root)[0] == 200
    got, _, answer = server.call("GET", "/api/v1/procedures/calculate_subscription_cost", headers=root)
    assert (got, answer["code"]) == (404, "PROCEDURE_NOT_FOUND")
    assert server.call("DELETE", "/api/v1/procedures/calculate_subscription_cost", headers=root)[0] == 404


# ---- malformed requests: a specific 4xx, never a 5xx ---------------------------------------------------


@pytest.fixture(scope="module")
def stub_server(platform):
    """A door that records instead of publishing, without rate limits: bad input only, nothing runs."""
    app, door = door_app(platform, rate_limit_enabled=False)
    door.services.__dict__["requests"] = stub = StubRequests()
    server = Server(app)
    server.stub = stub
    yield server
    server.close()


@pytest.mark.parametrize(("raw", "status", "code"), [
    (b"[" * 30_000 + b"]" * 30_000, 400, "JSON_TOO_DEEP"),
    (b'{"parameters": ' * 3_000 + b"1" + b"}" * 3_000, 400, "JSON_TOO_DEEP"),
    (b'{"parameters": {"x": NaN}}', 400, "NON_FINITE_NUMBER"),
    (b'{"parameters": {"x": Infinity}}', 400, "NON_FINITE_NUMBER"),
    (b'{"parameters": {"x": -Infinity}}', 400, "NON_FINITE_NUMBER"),
    (b'{"parameters": {"x": 1e400}}', 400, "NON_FINITE_NUMBER"),
    (b'{"parameters": {"x": 1}, "parameters": {"x": 2}}', 400, "DUPLICATE_KEY"),
    (b'{"parameters": {"x": "\\ud800"}}', 400, "INVALID_JSON"),
    (b'{"parameters": {"x": ' + b"9" * 5_000 + b"}}", 400, "INVALID_JSON"),
    (b'{"parameters": {"x": "caf\xe9"}}', 400, "INVALID_JSON"),
    (b'"\\' + b'\\"' * 30_000, 400, "INVALID_JSON"),
    (b"[]", 422, "INVALID_BODY"),
])
def test_malformed_bodies_answer_a_specific_4xx(platform, stub_server, raw, status, code):
    before = len(stub_server.stub.published)
    got, _, answer = stub_server.call("POST", run_path("acme_door"), headers=key_of(platform), raw=raw)
    assert (got, answer["code"]) == (status, code), answer
    assert len(stub_server.stub.published) == before


def test_platform_data_paths_are_not_pipelines(platform, stub_server):
    for path in ("/api/v1/pipelines/run/acme_door/setup/bootstrap/config",
                 "/api/v1/pipelines/run/acme_door/setup//plans"):
        got, _, answer = stub_server.call("POST", path, {}, key_of(platform))
        assert (got, answer["code"]) == (404, "UNKNOWN_PIPELINE"), (path, answer)
        assert "platform data" in answer["detail"]


def test_finite_floats_still_pass(platform, stub_server):
    got, _, answer = stub_server.call("POST", run_path("acme_door"), raw=b'{"parameters": {"x": 1.5e300, "y": -0.0}}',
                                      headers=key_of(platform))
    assert got == 202, answer
    assert answer["parameters"] == {"x": 1.5e300, "y": -0.0}
    request = stub_server.stub.published[-1]
    assert json.loads(request.to_json())["parameters"]["x"] == 1.5e300


def _fuzz_strategies():
    from urllib.parse import quote

    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=40))
    values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                          max_leaves=12)
    shaped = st.fixed_dictionaries({}, optional={
        "parameters": st.dictionaries(st.text(max_size=12), values, max_size=5),
        "date": st.one_of(st.text(max_size=12), st.dates().map(str), values),
        "month": st.one_of(st.text(max_size=8), values), "trigger": st.one_of(st.sampled_from(["adhoc", "backfill"]),
                                                                             values),
        "start_date": st.dates().map(str), "end_date": st.dates().map(str),
    })
    # json.dumps writes NaN/Infinity as bare words: the very input to refuse
    bodies = st.one_of(
        shaped.map(lambda body: json.dumps(body).encode()),
        values.map(lambda body: json.dumps(body).encode()),
        st.binary(max_size=200),
        st.tuples(st.integers(1, 3000), st.sampled_from(["[", "{\"a\":", "[{\"p\":"])).map(
            lambda t: (t[1] * t[0]).encode()),
        shaped.map(lambda body: json.dumps(body).encode()).flatmap(
            lambda raw: st.integers(0, max(len(raw) - 1, 0)).map(lambda cut: raw[:cut])),  # truncated
    )
    segment_text = st.one_of(
        st.sampled_from(["testing", "consumer", "ok", "setup", "bootstrap", "config", "plans", "..", ".", "",
                         "ok.yml", "schemas", "system", "procedures", "Consumer", "%2e%2e", "%2F", "%00", "a" * 80]),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=12).map(lambda t: quote(t, safe="")),
        st.from_regex(r"[a-z0-9_]{1,10}", fullmatch=True),
    )
    pipeline_paths = st.tuples(segment_text, segment_text, segment_text).map(lambda t: "/".join(t))
    orgs = st.one_of(st.just("acme_door"), st.just("acme_door"), segment_text)
    paths = st.one_of(
        st.tuples(orgs, pipeline_paths).map(lambda t: f"/api/v1/pipelines/run/{t[0]}/{t[1]}"),
        segment_text.map(lambda t: f"/api/v1/pipelines/runs/{t}"),
        segment_text.map(lambda t: f"/api/v1/procedures/{t}"),
        st.lists(segment_text, max_size=7).map(lambda parts: "/api/v1/pipelines/run/" + "/".join(parts)),
    )
    methods = st.sampled_from(["POST", "POST", "POST", "GET", "DELETE", "PUT"])
    return methods, paths, bodies


FUZZ_HEADERS = {"Content-Type": "application/json", "X-CA-Root-Key": "wrong-root-key"}


def test_fuzz_bodies_find_no_5xx(platform, stub_server):
    """Random bodies on real run paths, with a valid key: below 500 always, and what the door accepts the
    consumer's decoder accepts too (no 202 that the worker then rejects as malformed)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from convergence.schemas import decode_run_request

    _, _, bodies = _fuzz_strategies()
    targets = st.sampled_from([OK, "testing//flat", "setup/bootstrap/config", "setup//plans", "testing/consumer/no"])
    seen: dict[int, int] = {}

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(pipeline=targets, raw=bodies)
    def one(pipeline, raw):
        published = len(stub_server.stub.published)
        got, _, answer = stub_server.call("POST", run_path("acme_door", pipeline),
                                          headers={**FUZZ_HEADERS, "X-API-Key": platform.keys["acme_door"]}, raw=raw)
        seen[got] = seen.get(got, 0) + 1
        assert got < 500, (pipeline, raw[:200], answer)
        assert isinstance(answer, dict) and answer.get("code" if got >= 400 else "run_id"), answer
        if got == 202:
            request = stub_server.stub.published[-1]
            decode_run_request(request.to_json(), request.attributes())  # raises MessageRejected if not
        else:
            assert len(stub_server.stub.published) == published

    one()
    assert seen.get(202) and seen.get(400) and seen.get(422) and seen.get(404), seen


def test_fuzz_paths_find_no_5xx(platform, stub_server):
    """Random methods and paths under the API prefix, with a valid key: every answer is below 500."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    methods, paths, _ = _fuzz_strategies()
    bodies = st.sampled_from([b"", b"{}", b'{"parameters": {"seconds": 0}}', b"[", b'{"force": true}'])
    seen: dict[int, int] = {}

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(method=methods, path=paths, raw=bodies)
    def one(method, path, raw):
        got, _, answer = stub_server.call(method, path, raw=raw,
                                          headers={**FUZZ_HEADERS, "X-API-Key": platform.keys["acme_door"]})
        seen[got] = seen.get(got, 0) + 1
        assert got < 500, (method, path, raw, answer)

    one()
    assert seen.get(404) and seen.get(403), seen
