"""PushTokenVerifier against tokens signed with a local key and certs served over real HTTP.

Pub/Sub signs push requests with Google's keys, and the emulator sends no token at all, so tests play
Google: an RSA key, a self-signed certificate served as `{kid: PEM}` from a local aiohttp server (the
`push_certs_url`), and tokens signed with google-auth's own RSASigner.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from convergence.consumer.oidc import AuthFailure, CertsCache, PushAuthError, PushTokenVerifier

AUDIENCE = "https://convergence.example.run.app/pubsub/push"
SERVICE_ACCOUNT = "pubsub-push@convergence-local.iam.gserviceaccount.com"


@lru_cache(maxsize=4)
def signing_key(name: str) -> tuple[str, str]:
    """(private key PEM, self-signed certificate PEM); cached because RSA key generation is slow."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test-{name}")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return private_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


class OidcKit:
    """Plays Google: serves the certs over HTTP on 127.0.0.1 and mints push tokens."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}  # kid -> certificate PEM, as served
        self.max_age: int | None = 3600
        self.fail_with: int | None = None
        self.fetches = 0
        self.server: TestServer | None = None
        self.add_key("kid-1", "primary")

    def add_key(self, kid: str, name: str) -> None:
        self.keys[kid] = signing_key(name)[1]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/oauth2/v1/certs", self._certs)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    @property
    def certs_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/oauth2/v1/certs"))

    async def _certs(self, _: web.Request) -> web.Response:
        self.fetches += 1
        if self.fail_with is not None:
            return web.Response(status=self.fail_with, text="unavailable")
        headers = {"Cache-Control": f"public, max-age={self.max_age}"} if self.max_age is not None else {}
        return web.json_response(self.keys, headers=headers)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com", "aud": AUDIENCE, "azp": "1234567890",
            "email": SERVICE_ACCOUNT, "email_verified": True, "sub": "1234567890",
            "iat": now, "exp": now + 3600,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, *, kid: str = "kid-1", key: str = "primary", header: dict | None = None,
              **claims: Any) -> str:
        signer = crypt.RSASigner.from_string(signing_key(key)[0], key_id=kid)
        return jwt.encode(signer, self.claims(**claims), header=header).decode()

    def bearer(self, **kwargs: Any) -> str:
        return f"Bearer {self.token(**kwargs)}"


@pytest.fixture
async def kit() -> AsyncIterator[OidcKit]:
    kit = OidcKit()
    await kit.start()
    yield kit
    await kit.close()


@pytest.fixture
async def verifier(kit: OidcKit) -> AsyncIterator[PushTokenVerifier]:
    # Not started: each test sets up the certs server first; the first verify() fetches lazily.
    verifier = PushTokenVerifier(AUDIENCE, SERVICE_ACCOUNT, certs_url=kit.certs_url)
    yield verifier
    await verifier.close()


async def refused(verifier: PushTokenVerifier, authorization: str | None) -> PushAuthError:
    with pytest.raises(PushAuthError) as caught:
        await verifier.verify(authorization)
    return caught.value


async def test_a_valid_push_token_gives_the_identity(kit: OidcKit, verifier: PushTokenVerifier) -> None:
    identity = await verifier.verify(kit.bearer())
    assert identity.email == SERVICE_ACCOUNT
    assert identity.audience == AUDIENCE
    assert identity.subject == "1234567890"


async def test_the_bare_issuer_form_is_accepted(kit: OidcKit, verifier: PushTokenVerifier) -> None:
    assert (await verifier.verify(kit.bearer(iss="accounts.google.com"))).email == SERVICE_ACCOUNT


def _forged_hs256(kit: OidcKit) -> str:
    # Algorithm confusion: HMAC "signed" with the public certificate as the secret.
    signer = crypt.RSASigner.from_string(signing_key("primary")[0], key_id="kid-1")
    token = jwt.encode(signer, kit.claims(), header={"alg": "HS256"}).decode()
    return f"Bearer {token}"


@pytest.mark.parametrize(
    ("make_header", "failure", "status"),
    [
        (lambda kit: None, AuthFailure.MISSING_HEADER, 401),
        (lambda kit: "", AuthFailure.MISSING_HEADER, 401),
        (lambda kit: f"Basic {kit.token()}", AuthFailure.NOT_BEARER, 401),
        (lambda kit: "Bearer", AuthFailure.NOT_BEARER, 401),
        (lambda kit: "Bearer not-a-jwt", AuthFailure.MALFORMED, 401),
        (lambda kit: "Bearer " + "a" * 9000, AuthFailure.MALFORMED, 401),
        (lambda kit: kit.bearer(key="attacker"), AuthFailure.BAD_SIGNATURE, 401),
        (lambda kit: kit.bearer(kid="kid-unknown", key="attacker"), AuthFailure.UNKNOWN_KEY, 401),
        (lambda kit: kit.bearer(iat=int(time.time()) - 7200, exp=int(time.time()) - 60),
         AuthFailure.EXPIRED, 401),
        (lambda kit: kit.bearer(iat=int(time.time()) + 600), AuthFailure.NOT_YET_VALID, 401),
        (lambda kit: kit.bearer(exp=None), AuthFailure.MALFORMED, 401),
        (lambda kit: kit.bearer(aud="https://someone-else.example/push"), AuthFailure.WRONG_AUDIENCE, 401),
        (lambda kit: kit.bearer(iss="https://evil.example"), AuthFailure.WRONG_ISSUER, 401),
        (lambda kit: kit.bearer(email="other@project.iam.gserviceaccount.com"), AuthFailure.WRONG_EMAIL, 403),
        (lambda kit: kit.bearer(email=None), AuthFailure.WRONG_EMAIL, 403),
        (lambda kit: kit.bearer(email_verified=False), AuthFailure.EMAIL_NOT_VERIFIED, 403),
        (lambda kit: kit.bearer(header={"alg": "none"}), AuthFailure.INVALID, 401),
        (_forged_hs256, AuthFailure.INVALID, 401),
    ],
    ids=[
        "no-header", "empty-header", "basic", "bearer-without-token", "not-a-jwt", "oversized",
        "bad-signature", "unknown-kid", "expired", "issued-in-future", "no-exp", "wrong-audience",
        "wrong-issuer", "wrong-email", "no-email", "email-not-verified", "alg-none", "alg-hs256",
    ],
)
async def test_bad_tokens_are_refused_with_a_clear_reason(kit: OidcKit, verifier: PushTokenVerifier,
                                                          make_header, failure: AuthFailure,
                                                          status: int) -> None:
    header = make_header(kit)
    error = await refused(verifier, header)
    assert error.failure is failure
    assert error.http_status == status
    if header and " " in header:
        token = header.split(" ", 1)[1]
        # The reason never carries the token (google-auth's own messages do).
        assert token not in str(error) and token[:40] not in error.detail


async def test_certs_are_fetched_once_for_their_max_age(kit: OidcKit, verifier: PushTokenVerifier) -> None:
    for _ in range(5):
        await verifier.verify(kit.bearer())
    assert kit.fetches == 1


async def test_certs_without_max_age_are_fetched_again(kit: OidcKit, verifier: PushTokenVerifier) -> None:
    kit.max_age = 0
    for _ in range(3):
        await verifier.verify(kit.bearer())
    assert kit.fetches == 3


async def test_a_rotated_key_is_picked_up_at_once(kit: OidcKit) -> None:
    verifier = PushTokenVerifier(AUDIENCE, SERVICE_ACCOUNT, certs_url=kit.certs_url,
                                 certs=CertsCache(kit.certs_url, min_refresh_interval=0))
    try:
        await verifier.verify(kit.bearer())
        kit.add_key("kid-2", "rotated")
        identity = await verifier.verify(kit.bearer(kid="kid-2", key="rotated"))
        assert identity.email == SERVICE_ACCOUNT
        assert kit.fetches == 2
    finally:
        await verifier.close()


async def test_unknown_kids_do_not_hammer_the_certs_endpoint(kit: OidcKit,
                                                            verifier: PushTokenVerifier) -> None:
    await verifier.verify(kit.bearer())
    for n in range(5):
        error = await refused(verifier, kit.bearer(kid=f"random-{n}", key="attacker"))
        assert error.failure is AuthFailure.UNKNOWN_KEY
    assert kit.fetches == 1  # one refetch per min_refresh_interval (30 s), and the first fetch was it


async def test_unreachable_certs_are_a_retryable_503(kit: OidcKit, verifier: PushTokenVerifier) -> None:
    kit.fail_with = 500
    error = await refused(verifier, kit.bearer())
    assert error.failure is AuthFailure.CERTS_UNAVAILABLE
    assert error.http_status == 503


async def test_stale_certs_serve_while_the_endpoint_is_down(kit: OidcKit,
                                                           verifier: PushTokenVerifier) -> None:
    kit.max_age = 0
    await verifier.verify(kit.bearer())
    kit.fail_with = 503
    assert (await verifier.verify(kit.bearer())).email == SERVICE_ACCOUNT
    assert (await verifier.verify(kit.bearer())).email == SERVICE_ACCOUNT
    assert kit.fetches == 2  # the failed refetch is not retried on every request


async def test_a_jwks_document_is_refused_clearly(kit: OidcKit, verifier: PushTokenVerifier) -> None:
    kit.keys = {"keys": []}  # type: ignore[dict-item]
    error = await refused(verifier, kit.bearer())
    assert error.failure is AuthFailure.CERTS_UNAVAILABLE
    assert "kid: PEM" in error.detail


async def test_start_fetches_the_certs_and_survives_an_outage(kit: OidcKit) -> None:
    verifier = PushTokenVerifier(AUDIENCE, SERVICE_ACCOUNT, certs_url=kit.certs_url)
    await verifier.start()
    assert kit.fetches == 1
    await verifier.verify(kit.bearer())
    assert kit.fetches == 1
    await verifier.close()

    kit.fail_with = 500
    down = PushTokenVerifier(AUDIENCE, SERVICE_ACCOUNT, certs_url=kit.certs_url)
    await down.start()  # logs, does not raise
    kit.fail_with = None
    assert (await down.verify(kit.bearer())).email == SERVICE_ACCOUNT
    await down.close()


def test_an_audience_is_mandatory() -> None:
    # google-auth skips the audience check when audience is None: never allow that here.
    with pytest.raises(ValueError, match="audience"):
        PushTokenVerifier("", SERVICE_ACCOUNT)
    with pytest.raises(ValueError, match="service account"):
        PushTokenVerifier(AUDIENCE, "")
