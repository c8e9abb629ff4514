"""`POST /pubsub/push`, /health and /ready over real HTTP (aiohttp test server on 127.0.0.1).

The message handler is injected; a small recording handler stands in for the lead's RunHandler.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from convergence.consumer.http_app import PUSH, Lifecycle, PushConfigError, create_app
from convergence.consumer.outcome import Outcome, OutcomeKind
from convergence.consumer.push import EnvelopeError, parse_envelope, push_budget_seconds
from convergence.settings.model import Settings, load_settings
from tests.unit.consumer.test_oidc import AUDIENCE, SERVICE_ACCOUNT, OidcKit


@dataclass
class Call:
    data: bytes
    attributes: dict[str, str]
    message_id: str
    delivery_attempt: int | None
    deadline_seconds: float | None


@dataclass
class RecordingHandler:
    """Records every call; answers with `outcomes` in turn (the last one repeats)."""

    outcomes: list[Outcome] = field(default_factory=lambda: [Outcome(OutcomeKind.SUCCEEDED)])
    delay: float = 0.0
    error: Exception | None = None
    calls: list[Call] = field(default_factory=list)
    cancelled: int = 0

    async def handle(self, data: bytes, attributes: Mapping[str, str], message_id: str,
                     delivery_attempt: int | None, *, deadline_seconds: float | None = None) -> Outcome:
        self.calls.append(Call(data, dict(attributes), message_id, delivery_attempt, deadline_seconds))
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return self.outcomes[min(len(self.calls), len(self.outcomes)) - 1]


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"environment": "development", "push_verify_token": False}
    values.update(overrides)
    return load_settings(**values)


def envelope(data: bytes = b'{"run_id": "r-1"}', attributes: dict[str, str] | None = None,
             message_id: str = "m-1", **extra: Any) -> dict[str, Any]:
    body = {
        "subscription": "projects/convergence-local/subscriptions/pipeline-requests-push",
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes if attributes is not None else {"org_slug": "acme"},
            "messageId": message_id, "message_id": message_id,
            "publishTime": "2026-01-01T00:00:00.000Z",
        },
    }
    body.update(extra)
    return body


Client = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def serve() -> AsyncIterator[Client]:
    """Start create_app(...) on a real 127.0.0.1 port; every client is closed at the end."""
    clients: list[TestClient] = []

    async def start(app_settings: Settings, handler: Any, **kwargs: Any) -> TestClient:
        client = TestClient(TestServer(create_app(app_settings, handler, **kwargs), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def kit() -> AsyncIterator[OidcKit]:
    kit = OidcKit()
    await kit.start()
    yield kit
    await kit.close()


def verifying(kit: OidcKit, **overrides: Any) -> Settings:
    values = {"push_verify_token": True, "push_audience": AUDIENCE,
              "push_service_account_email": SERVICE_ACCOUNT, "push_certs_url": kit.certs_url, **overrides}
    return settings(**values)


# --- the happy path and the ack policy ---------------------------------------------------------------

async def test_a_good_envelope_runs_the_handler_once_and_acks(serve: Client) -> None:
    handler = RecordingHandler()
    client = await serve(settings(push_ack_deadline_seconds=60), handler)
    response = await client.post("/pubsub/push", json=envelope(b"\x00payload\xff", {"org_slug": "acme",
                                                                                   "run_id": "r-1"}))
    assert response.status == 204
    assert await response.read() == b""
    assert handler.calls == [Call(b"\x00payload\xff", {"org_slug": "acme", "run_id": "r-1"}, "m-1", None,
                                  push_budget_seconds(60))]
    assert handler.calls[0].deadline_seconds == 54.0  # 60 s ack deadline minus a 6 s margin


async def test_delivery_attempt_is_passed_on(serve: Client) -> None:
    handler = RecordingHandler()
    client = await serve(settings(), handler)
    assert (await client.post("/pubsub/push", json=envelope(deliveryAttempt=3))).status == 204
    assert handler.calls[0].delivery_attempt == 3


@pytest.mark.parametrize("kind", list(OutcomeKind))
async def test_every_outcome_maps_to_its_ack_or_nack_status(serve: Client, kind: OutcomeKind) -> None:
    outcome = Outcome(kind, run_id="r-1", code="X")
    client = await serve(settings(), RecordingHandler(outcomes=[outcome]))
    response = await client.post("/pubsub/push", json=envelope())
    assert response.status == outcome.http_status
    assert response.status == (503 if kind in (OutcomeKind.RETRY, OutcomeKind.SHUTTING_DOWN) else 204)


async def test_retry_outcome_nacks_with_503(serve: Client) -> None:
    client = await serve(settings(), RecordingHandler(outcomes=[Outcome(OutcomeKind.RETRY, code="BQ_503")]))
    response = await client.post("/pubsub/push", json=envelope())
    assert response.status == 503
    assert await response.json() == {"outcome": "retry", "code": "BQ_503"}


async def test_a_handler_that_raises_is_a_nack(serve: Client) -> None:
    handler = RecordingHandler(error=RuntimeError("boom"))
    client = await serve(settings(), handler)
    with capture_logs() as logs:
        response = await client.post("/pubsub/push", json=envelope())
    assert response.status == 503
    assert (await response.json())["error"] == "handler_error"
    assert any(entry["event"] == "push handler failed; nacking" for entry in logs)


async def test_a_handler_over_its_budget_is_cut_and_nacked_before_the_ack_deadline(serve: Client) -> None:
    handler = RecordingHandler(delay=30)
    # 10 s ack deadline, 9.5 s kept back: the handler gets 0.5 s.
    client = await serve(settings(push_ack_deadline_seconds=10, push_deadline_margin_seconds=9.5),
                         handler)
    started = time.monotonic()
    response = await client.post("/pubsub/push", json=envelope())
    elapsed = time.monotonic() - started
    assert response.status == 503
    assert (await response.json())["error"] == "deadline_exceeded"
    assert 0.5 <= elapsed < 10  # cut at 0.5 s, far before the handler's 30 s (loose: loaded machines)
    assert handler.calls[0].deadline_seconds == 0.5
    assert handler.cancelled == 1


def test_the_budget_leaves_a_margin_inside_the_ack_deadline() -> None:
    assert push_budget_seconds(10) == 8.0
    assert push_budget_seconds(60) == 54.0
    assert push_budget_seconds(600) == 585.0
    assert push_budget_seconds(60, 20) == 40.0
    with pytest.raises(ValueError):
        push_budget_seconds(10, 10)


# --- broken envelopes: 400, nothing runs -------------------------------------------------------------

def _good_message(**changes: Any) -> dict[str, Any]:
    message = envelope()["message"]
    message.update(changes)
    return {k: v for k, v in message.items() if v is not None}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"a string"', "not_an_object"),
        (b"{}", "missing_message"),
        (json.dumps({"message": "text"}).encode(), "missing_message"),
        (json.dumps({"message": _good_message(data="not base64!!")}).encode(), "bad_base64"),
        (json.dumps({"message": _good_message(data="QUJD=A")}).encode(), "bad_base64"),
        (json.dumps({"message": _good_message(data="QUJDR")}).encode(), "bad_base64"),
        (json.dumps({"message": _good_message(data=123)}).encode(), "bad_base64"),
        (json.dumps({"message": _good_message(attributes={"n": 1})}).encode(), "bad_attributes"),
        (json.dumps({"message": _good_message(attributes=["a"])}).encode(), "bad_attributes"),
        (json.dumps({"message": _good_message(messageId=None, message_id=None)}).encode(),
         "missing_message_id"),
        (json.dumps({"message": _good_message(), "deliveryAttempt": "2"}).encode(), "bad_delivery_attempt"),
    ],
    ids=[
        "not-json", "not-utf8", "empty", "array", "string", "no-message", "message-not-object",
        "bad-base64-chars", "bad-base64-padding", "bad-base64-length", "data-not-string",
        "attribute-not-string", "attributes-not-object", "no-message-id", "delivery-attempt-string",
    ],
)
async def test_broken_envelopes_are_refused_without_running_anything(serve: Client, body: bytes,
                                                                     reason: str) -> None:
    handler = RecordingHandler()
    client = await serve(settings(), handler)
    response = await client.post("/pubsub/push", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["error"] == reason
    assert handler.calls == []


async def test_an_oversized_body_is_refused_with_413(serve: Client) -> None:
    handler = RecordingHandler()
    client = await serve(settings(push_max_body_bytes=4096), handler)
    big = json.dumps(envelope(b"x" * 8000)).encode()
    response = await client.post("/pubsub/push", data=big)
    assert response.status == 413
    assert handler.calls == []


async def test_an_oversized_chunked_body_is_refused_with_413(serve: Client) -> None:
    handler = RecordingHandler()
    client = await serve(settings(push_max_body_bytes=4096), handler)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
        for _ in range(10):
            yield b"x" * 1000

    response = await client.post("/pubsub/push", data=chunks())
    assert response.status == 413
    assert handler.calls == []


def test_url_safe_and_unpadded_base64_are_accepted() -> None:
    # proto3 JSON allows both alphabets, with or without padding.
    payload = b"\xfb\xff\xbe-data"
    standard, url_safe = base64.b64encode(payload).decode(), base64.urlsafe_b64encode(payload).decode()
    for encoded in (standard, url_safe.rstrip("=")):
        assert parse_envelope(json.dumps({"message": _good_message(data=encoded)}).encode()).data == payload


def test_a_message_without_data_or_attributes_is_empty() -> None:
    parsed = parse_envelope(b'{"message": {"messageId": "7"}}')
    assert (parsed.data, parsed.attributes, parsed.delivery_attempt) == (b"", {}, None)
    with pytest.raises(EnvelopeError):
        parse_envelope(b'{"message": {"messageId": "7"}, "deliveryAttempt": 0}')


# --- authentication: 401/403, nothing runs -----------------------------------------------------------

async def test_a_valid_token_is_let_through(serve: Client, kit: OidcKit) -> None:
    handler = RecordingHandler()
    client = await serve(verifying(kit), handler)
    response = await client.post("/pubsub/push", json=envelope(), headers={"Authorization": kit.bearer()})
    assert response.status == 204
    assert len(handler.calls) == 1


@pytest.mark.parametrize(
    ("make_header", "status", "reason"),
    [
        (lambda kit: None, 401, "missing_authorization"),
        (lambda kit: "Bearer garbage", 401, "malformed_token"),
        (lambda kit: kit.bearer(key="attacker"), 401, "bad_signature"),
        (lambda kit: kit.bearer(iat=int(time.time()) - 7200, exp=int(time.time()) - 60), 401, "expired"),
        (lambda kit: kit.bearer(aud="https://other.example/push"), 401, "wrong_audience"),
        (lambda kit: kit.bearer(email="intruder@evil.iam.gserviceaccount.com"), 403, "wrong_email"),
        (lambda kit: kit.bearer(email_verified=False), 403, "email_not_verified"),
    ],
    ids=["missing", "invalid", "bad-signature", "expired", "wrong-audience", "wrong-email", "unverified"],
)
async def test_bad_tokens_are_refused_without_running_anything(serve: Client, kit: OidcKit, make_header,
                                                               status: int, reason: str) -> None:
    handler = RecordingHandler()
    client = await serve(verifying(kit), handler)
    header = make_header(kit)
    headers = {"Authorization": header} if header else {}
    with capture_logs() as logs:
        response = await client.post("/pubsub/push", json=envelope(), headers=headers)
    assert response.status == status
    assert (await response.json())["error"] == reason
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert handler.calls == []
    assert any(entry.get("reason") == reason for entry in logs)
    if header:  # never log the token
        assert header.split(" ", 1)[1] not in repr(logs)


async def test_auth_is_checked_before_the_body_is_read(serve: Client, kit: OidcKit) -> None:
    handler = RecordingHandler()
    client = await serve(verifying(kit), handler)
    response = await client.post("/pubsub/push", data=b"{garbage")
    assert response.status == 401
    assert handler.calls == []


async def test_unreachable_certs_nack_with_503_not_4xx(serve: Client, kit: OidcKit) -> None:
    handler = RecordingHandler()
    kit.fail_with = 500
    client = await serve(verifying(kit), handler)
    response = await client.post("/pubsub/push", json=envelope(), headers={"Authorization": kit.bearer()})
    assert response.status == 503
    assert handler.calls == []


async def test_certs_are_fetched_once_across_requests(serve: Client, kit: OidcKit) -> None:
    client = await serve(verifying(kit), RecordingHandler())
    for n in range(5):
        response = await client.post("/pubsub/push", json=envelope(message_id=f"m-{n}"),
                                     headers={"Authorization": kit.bearer()})
        assert response.status == 204
    assert kit.fetches == 1


# --- verification switch -----------------------------------------------------------------------------

async def test_verification_off_outside_production_accepts_unsigned_pushes(serve: Client) -> None:
    handler = RecordingHandler()
    with capture_logs() as logs:
        client = await serve(settings(environment="development", push_verify_token=False), handler)
    assert (await client.post("/pubsub/push", json=envelope())).status == 204
    assert len(handler.calls) == 1
    assert any("verification is OFF" in entry["event"] for entry in logs)


def test_verification_off_in_production_refuses_to_start() -> None:
    with pytest.raises(PushConfigError, match="refused in production"):
        create_app(settings(environment="production", push_verify_token=False), RecordingHandler())


@pytest.mark.parametrize("missing", ["push_audience", "push_service_account_email"])
def test_verification_on_needs_audience_and_service_account(missing: str) -> None:
    values = {"push_verify_token": True, "push_audience": AUDIENCE,
              "push_service_account_email": SERVICE_ACCOUNT}
    values[missing] = None
    with pytest.raises(PushConfigError, match=missing.upper()):
        create_app(settings(environment="production", **values), RecordingHandler())


async def test_the_audience_defaults_to_the_push_endpoint_like_pubsub(serve: Client, kit: OidcKit) -> None:
    handler = RecordingHandler()
    client = await serve(verifying(kit, push_audience=None, push_endpoint=AUDIENCE), handler)
    response = await client.post("/pubsub/push", json=envelope(), headers={"Authorization": kit.bearer()})
    assert response.status == 204
    other = kit.bearer(aud="https://elsewhere.example/push")
    assert (await client.post("/pubsub/push", json=envelope(), headers={"Authorization": other})).status == 401


# --- probes and lifecycle ----------------------------------------------------------------------------

async def test_health_is_always_200(serve: Client) -> None:
    async def never_ready() -> bool:
        return False

    client = await serve(settings(), RecordingHandler(), readiness=never_ready)
    response = await client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


@pytest.mark.parametrize(("answer", "status", "reason"), [
    (True, 200, None), (False, 503, "dependencies_not_ready"), (RuntimeError("bq down"), 503, "check_failed"),
])
async def test_ready_follows_the_readiness_check(serve: Client, answer: Any, status: int,
                                                 reason: str | None) -> None:
    async def readiness() -> bool:
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = await serve(settings(), RecordingHandler(), readiness=readiness)
    response = await client.get("/ready")
    assert response.status == status
    assert (await response.json()).get("reason") == reason


async def test_ready_without_a_check_is_200_once_started(serve: Client) -> None:
    client = await serve(settings(), RecordingHandler())
    assert (await client.get("/ready")).status == 200


async def test_lifecycle_hooks_run_in_order(kit: OidcKit) -> None:
    events: list[str] = []

    def hook(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            events.append(name)
        return run

    app = create_app(verifying(kit), RecordingHandler(), lifecycle=[
        Lifecycle(startup=hook("a.start"), shutdown=hook("a.shutdown"), cleanup=hook("a.cleanup")),
        Lifecycle(startup=hook("b.start"), cleanup=hook("b.cleanup")),
    ])
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    assert events == ["a.start", "b.start"]
    response = await client.post("/pubsub/push", json=envelope(), headers={"Authorization": kit.bearer()})
    assert response.status == 204
    await client.close()
    assert events == ["a.start", "b.start", "a.shutdown", "b.cleanup", "a.cleanup"]
    assert app[PUSH].accepting is False


async def test_a_resource_that_fails_to_open_closes_the_ones_already_open(kit: OidcKit) -> None:
    events: list[str] = []

    def hook(name: str, fail: bool = False) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            events.append(name)
            if fail:
                raise RuntimeError(f"{name} failed")
        return run

    app = create_app(verifying(kit), RecordingHandler(), lifecycle=[
        Lifecycle(startup=hook("a.start"), cleanup=hook("a.cleanup")),
        Lifecycle(startup=hook("b.start", fail=True), cleanup=hook("b.cleanup")),
        Lifecycle(startup=hook("c.start"), cleanup=hook("c.cleanup")),
    ])
    client = TestClient(TestServer(app, host="127.0.0.1"))
    with pytest.raises(RuntimeError, match="b.start failed"):
        await client.start_server()
    await client.close()
    assert events == ["a.start", "b.start", "a.cleanup"]  # b never opened, c never started


async def test_a_push_arriving_while_shutting_down_is_nacked_without_running(serve: Client) -> None:
    handler = RecordingHandler()
    client = await serve(settings(), handler)
    client.app[PUSH].stop_accepting()
    response = await client.post("/pubsub/push", json=envelope())
    assert response.status == 503
    assert handler.calls == []


async def test_the_endpoint_works_on_a_plain_client_session(serve: Client) -> None:
    # Not only the test client: a plain aiohttp session on the bound 127.0.0.1 port.
    handler = RecordingHandler()
    client = await serve(settings(), handler)
    url = str(client.make_url("/pubsub/push"))
    async with ClientSession() as session, session.post(url, json=envelope()) as response:
        assert response.status == 204
    assert str(client.make_url("/")).startswith("http://127.0.0.1:")
    assert len(handler.calls) == 1
    assert isinstance(client.app, web.Application)


async def test_production_fetches_the_certs_through_the_outbound_guard(serve: Client, kit: OidcKit) -> None:
    # The local certs URL is plain http on a loopback address: production refuses it unless allowed.
    client = await serve(verifying(kit, environment="production"), RecordingHandler())
    response = await client.post("/pubsub/push", json=envelope(), headers={"Authorization": kit.bearer()})
    assert response.status == 503
    body = await response.json()
    assert body["error"] == "certs_unavailable"
    assert "certs URL refused: plain http to 127.0.0.1 is refused in production" in body["detail"]
    assert kit.fetches == 0

    allowed = await serve(verifying(kit, environment="production", outbound_allowed_hosts=["127.0.0.1"]),
                          RecordingHandler())
    response = await allowed.post("/pubsub/push", json=envelope(), headers={"Authorization": kit.bearer()})
    assert response.status == 204
    assert kit.fetches == 1
