"""`POST /pubsub/push`: Pub/Sub push delivery, mapped onto the same handler and ack policy as pull.

Push acks with 102/200/201/202/204 and nacks with anything else, so:

| request                                           | answer | effect                                |
|---------------------------------------------------|--------|---------------------------------------|
| handler outcome with disposition ACK              | 204    | ack                                   |
| handler outcome with disposition NACK             | 503    | nack: retry policy, then dead letter  |
| handler raised, or overran the deadline budget    | 503    | nack                                  |
| OIDC certs cannot be fetched (our side)           | 503    | nack                                  |
| missing/invalid token                             | 401    | nothing runs                          |
| valid Google token, not our push service account  | 403    | nothing runs                          |
| body over push_max_body_bytes                     | 413    | nothing runs                          |
| not JSON, no message, bad base64, bad attributes  | 400    | nothing runs                          |

A 4xx is a nack too: a broken envelope is redelivered until the subscription's dead-letter policy moves
it to the dead-letter topic (without one, until retention expires). That is the right end for garbage:
it can never succeed, and the dead-letter topic keeps it for inspection. It differs from the pull path's
"malformed run request -> ack REJECTED" on purpose: an envelope that is not a Pub/Sub envelope never
reached the message contract at all. A well-formed envelope whose payload is not a valid run request
goes to the handler, which rejects it (acked, 204) exactly as on the pull path.

4xx is never used for anything that could succeed later: every retryable case is 503.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiohttp import web

from convergence.consumer.oidc import PushAuthError, PushTokenVerifier
from convergence.consumer.outcome import Outcome
from convergence.observability import metrics
from convergence.observability.logging import run_context

log = structlog.get_logger(__name__)

_BASE64 = re.compile(r"[A-Za-z0-9+/\-_]*={0,2}")


class MessageHandler(Protocol):
    """Same shape as consumer.pool.MessageHandler: one delivery in, one Outcome out."""

    async def handle(self, data: bytes, attributes: Mapping[str, str], message_id: str,
                     delivery_attempt: int | None, *, deadline_seconds: float | None = None) -> Outcome: ...


class EnvelopeError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PushEnvelope:
    message_id: str
    data: bytes
    attributes: dict[str, str]
    subscription: str | None = None
    publish_time: str | None = None
    delivery_attempt: int | None = None
    ordering_key: str | None = None


def parse_envelope(body: bytes) -> PushEnvelope:
    """The wrapped push body. Raises EnvelopeError (-> 400) for anything that is not one."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise EnvelopeError("invalid_json", "body is not JSON") from None
    if not isinstance(document, dict):
        raise EnvelopeError("not_an_object", "body is not a JSON object")
    message = document.get("message")
    if not isinstance(message, dict):
        raise EnvelopeError("missing_message", "no `message` object in the envelope")
    message_id = _first(message, "messageId", "message_id")
    if not isinstance(message_id, str) or not message_id:
        raise EnvelopeError("missing_message_id", "message has no messageId")
    return PushEnvelope(
        message_id=message_id,
        data=_decode_data(message.get("data")),
        attributes=_attributes(message.get("attributes")),
        subscription=_optional_str(document.get("subscription")),
        publish_time=_optional_str(_first(message, "publishTime", "publish_time")),
        # Documented at the top level; accept it inside `message` too. The emulator sends neither.
        delivery_attempt=_delivery_attempt(_first(
            document, "deliveryAttempt", "delivery_attempt",
            default=_first(message, "deliveryAttempt", "delivery_attempt"),
        )),
        ordering_key=_optional_str(_first(message, "orderingKey", "ordering_key")),
    )


def _first(mapping: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if mapping.get(key) is not None:
            return mapping[key]
    return default


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _decode_data(value: Any) -> bytes:
    """proto3 JSON bytes: standard or URL-safe base64, padding optional. A message may have no data."""
    if value is None:
        return b""
    if not isinstance(value, str):
        raise EnvelopeError("bad_base64", "message.data is not a string")
    if not _BASE64.fullmatch(value):
        raise EnvelopeError("bad_base64", "message.data is not base64")
    padded = value + "=" * (-len(value) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError("bad_base64", "message.data is not base64") from None


def _attributes(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise EnvelopeError("bad_attributes", "message.attributes is not an object of strings")
    return value


def _delivery_attempt(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EnvelopeError("bad_delivery_attempt", "deliveryAttempt is not a positive integer")
    return value


def push_budget_seconds(ack_deadline_seconds: float, margin_seconds: float | None = None) -> float:
    """Time the handler may take: the ack deadline (= push request timeout) minus a margin to answer."""
    if margin_seconds is None:
        margin_seconds = min(max(ack_deadline_seconds * 0.1, 2.0), 15.0)
    budget = ack_deadline_seconds - margin_seconds
    if budget < 0.1:
        raise ValueError(
            f"push deadline margin {margin_seconds}s leaves no time "
            f"within the {ack_deadline_seconds}s ack deadline"
        )
    return budget


@dataclass
class PushStats:
    """Answers by HTTP status, for tests, logs and (later) /metrics."""

    by_status: dict[int, int] = field(default_factory=dict)

    def count(self, status: int) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1


class PushEndpoint:
    """One push request: authenticate, parse, run the handler within the budget, answer ack or nack."""

    def __init__(self, handler: MessageHandler, *, budget_seconds: float, max_body_bytes: int,
                 verifier: PushTokenVerifier | None = None) -> None:
        self.handler = handler
        self.budget_seconds = budget_seconds
        self.max_body_bytes = max_body_bytes
        self.verifier = verifier
        self.stats = PushStats()
        self.accepting = True

    def stop_accepting(self) -> None:
        """Shutting down: requests that arrive from now on are nacked without starting a run."""
        self.accepting = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = await self._respond(request)
        self.stats.count(response.status)
        metrics.record_push(response.status)
        return response

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        try:
            await self._authenticate(request)
            envelope = self._parse(await self._read_body(request))
        except _Refused as refused:
            return refused.response
        if not self.accepting:
            log.info("push nacked: shutting down", message_id=envelope.message_id)
            return _error(503, "shutting_down", "server is shutting down")
        return await self._run(envelope)

    async def _authenticate(self, request: web.Request) -> None:
        # Before the body is read: unauthenticated callers cost one header parse, nothing more.
        if self.verifier is None:
            return
        try:
            await self.verifier.verify(request.headers.get("Authorization"))
        except PushAuthError as error:
            log.warning("push refused: authentication", reason=error.failure.value, detail=error.detail,
                        status=error.http_status)
            raise _Refused(_auth_error(error)) from None

    async def _read_body(self, request: web.Request) -> bytes:
        # Content-Length is checked first so an oversized body is not read at all; the app's
        # client_max_size (same limit) catches chunked bodies while reading.
        if (request.content_length or 0) <= self.max_body_bytes:
            try:
                return await request.read()
            except web.HTTPRequestEntityTooLarge:
                pass
        log.warning("push refused: body too large", content_length=request.content_length,
                    limit=self.max_body_bytes)
        raise _Refused(_error(413, "body_too_large", f"request body exceeds {self.max_body_bytes} bytes"))

    @staticmethod
    def _parse(body: bytes) -> PushEnvelope:
        try:
            return parse_envelope(body)
        except EnvelopeError as error:
            log.warning("push refused: bad envelope", reason=error.reason, detail=error.detail,
                        body_bytes=len(body))
            raise _Refused(_error(400, error.reason, error.detail)) from None

    async def _run(self, envelope: PushEnvelope) -> web.Response:
        started = time.monotonic()
        with run_context(message_id=envelope.message_id):
            budget = asyncio.timeout(self.budget_seconds)
            try:
                async with budget:
                    outcome = await self.handler.handle(
                        envelope.data, envelope.attributes, envelope.message_id, envelope.delivery_attempt,
                        deadline_seconds=self.budget_seconds,
                    )
                status = outcome.http_status
                metrics.record_outcome(metrics.PUSH, outcome)
            except Exception:  # noqa: BLE001 - nack, never lose the message; the handler logs details
                if budget.expired():
                    # Answer before Pub/Sub gives up on the request; the handler's work was cancelled.
                    log.error("push handler overran its deadline budget; nacking",
                              budget_seconds=self.budget_seconds, subscription=envelope.subscription)
                    return _error(503, "deadline_exceeded", "handler did not finish within the push budget")
                log.exception("push handler failed; nacking", subscription=envelope.subscription)
                return _error(503, "handler_error", "handler failed")
            log.info("push handled", outcome=outcome.kind.value, code=outcome.code, status=status,
                     subscription=envelope.subscription, delivery_attempt=envelope.delivery_attempt,
                     duration_ms=round((time.monotonic() - started) * 1000))
        if status == 204:
            return web.Response(status=204)
        return web.json_response({"outcome": outcome.kind.value, "code": outcome.code}, status=status)


class _Refused(Exception):
    """Carries the answer for a request refused before the handler runs."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


def _error(status: int, reason: str, detail: str) -> web.Response:
    return web.json_response({"error": reason, "detail": detail}, status=status)


def _auth_error(error: PushAuthError) -> web.Response:
    response = _error(error.http_status, error.failure.value, error.detail)
    if error.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response
