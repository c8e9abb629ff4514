"""The production SSRF guard over real loopback servers: redirects, DNS rebinding, address families, Slack.

The "internal" servers below hold a secret body and count their hits: a test passes only if the secret
never comes back and the internal server is never reached. Host names are answered by a small resolver
(a stand-in for DNS) under the guard's resolver, so a test can make a name resolve to anything.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from convergence.httpclient import AddressGuard, BlockedAddress, HttpClient, RetryPolicy
from convergence.httpclient.ssrf import refusal
from convergence.notifications.email import NotificationError
from convergence.notifications.slack import SlackSender
from convergence.pipeline.errors import PermanentStepError
from convergence.runtime.services import Services
from convergence.settings.model import load_settings

FAST = RetryPolicy(attempts=2, initial_seconds=0.01, max_seconds=0.02)
SECRET_BODY = "internal-secret-body"


def tls(tmp_path, names: list[str]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context) for a self-signed certificate naming `names`: real TLS, so the
    production rule "https only" holds in the tests that need a connection to succeed."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    return server, ssl.create_default_context(cafile=str(cert_path))


class Server:
    """One loopback aiohttp server on `host`; `handler(request, server)` answers; hits are counted."""

    def __init__(self, handler, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None):
        self.handler, self.host, self.hits, self.headers = handler, host, 0, []
        self.ssl_context = ssl_context

    async def start(self) -> Server:
        async def handle(request):
            self.hits += 1
            self.headers.append(dict(request.headers))
            return await self.handler(request, self)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
        return self

    def url(self, path: str = "/x", host: str | None = None) -> str:
        host = host or self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}{path}"


async def secret(request, server):
    return web.json_response({"secret": SECRET_BODY})


async def public(request, server):
    return web.json_response({"data": "public"})


@pytest.fixture
async def servers():
    started = []

    async def start(handler, host="127.0.0.1", ssl_context=None):
        server = await Server(handler, host, ssl_context).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.runner.cleanup()


class NameServer(AbstractResolver):
    """DNS stand-in: `answers[name]` is a list of addresses, handed out one per lookup (the last repeats)."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers
        self.lookups: list[tuple[str, str]] = []

    async def resolve(self, host, port=0, family=socket.AF_INET):
        queue = self.answers[host]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        self.lookups.append((host, address))
        version = ipaddress.ip_address(address).version
        return [{"hostname": host, "host": address, "port": port, "proto": 0, "flags": 0,
                 "family": socket.AF_INET6 if version == 6 else socket.AF_INET}]

    async def close(self):
        pass


def client(guard: AddressGuard, names: NameServer | None = None, **connector_options) -> HttpClient:
    session = guard.session(base_resolver=names, connector_options=connector_options or None)
    return HttpClient(session, "vendor", guard=guard, policy=FAST)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "255.255.255.255", "198.18.0.1",
    "::1", "::", "fe80::1", "fd00:ec2::254", "fc00::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4-mapped
    "2002:7f00:1::", "2002:a9fe:a9fe::1",  # 6to4 of 127.0.0.1 and 169.254.169.254
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1",  # NAT64 (well-known and local-use prefixes)
    "::127.0.0.1",  # IPv4-compatible
])
def test_internal_addresses_of_every_form_are_refused(address):
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_pass(address):
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("url", [
    "https://[::ffff:127.0.0.1]/x", "https://[::ffff:7f00:1]/x", "https://[2002:a9fe:a9fe::]/x",
    "https://[fd00:ec2::254]/latest/meta-data/", "https://metadata.google.internal/computeMetadata/v1/",
    "https://METADATA.google.internal./x", "http://public.example/x", "gopher://public.example/x",
])
def test_urls_refused_before_any_lookup(url):
    with pytest.raises(BlockedAddress):
        AddressGuard(enabled=True).check_url(url)


async def test_a_redirect_to_an_internal_address_is_refused_and_its_body_never_returned(servers):
    internal = await servers(secret)
    targets = [internal.url("/latest"), f"https://internal.test:{internal.port}/latest",
               f"https://[::ffff:127.0.0.1]:{internal.port}/latest", "https://169.254.169.254/computeMetadata/v1/",
               "https://metadata.google.internal/computeMetadata/v1/"]

    async def redirect(request, server):
        return web.Response(status=302, headers={"Location": targets[int(request.query["n"])]})

    edge = await servers(redirect)
    # The allow-listed host is the tenant's API; it answers with a redirect into the internal network.
    guard = AddressGuard(enabled=True, allowed_hosts=frozenset({"api.tenant.test"}))
    names = NameServer({"api.tenant.test": ["127.0.0.1"], "internal.test": ["127.0.0.1"]})
    http = client(guard, names)
    try:
        for n in range(len(targets)):
            with pytest.raises(BlockedAddress) as caught:
                await http.request_json("GET", f"http://api.tenant.test:{edge.port}/v1?n={n}&key=sk-live-1")
            assert caught.value.code == "BLOCKED_ADDRESS" and not caught.value.retryable
            assert "redirect from" in str(caught.value) and SECRET_BODY not in str(caught.value)
            assert "sk-live-1" not in str(caught.value)
    finally:
        await http.session.close()
    assert edge.hits == len(targets) and internal.hits == 0


async def test_without_the_guard_the_same_redirect_reaches_the_internal_host(servers):
    # The control for the test above: the redirect is real and would be followed.
    internal = await servers(secret)

    async def redirect(request, server):
        return web.Response(status=302, headers={"Location": internal.url("/latest")})

    edge = await servers(redirect)
    async with aiohttp.ClientSession() as session:
        body, _ = await HttpClient(session, "vendor", policy=FAST).request_json("GET", edge.url())
    assert body == {"secret": SECRET_BODY} and internal.hits == 1


async def test_allowed_redirects_are_followed_a_bounded_number_of_times_and_drop_credentials(servers):
    async def final(request, server):
        return web.json_response({"data": "moved"})

    other = await servers(final, host="127.0.0.2")

    async def hop(request, server):
        n = int(request.query.get("n", "0"))
        if n == 2:  # same origin twice, then to another origin
            return web.Response(status=301, headers={"Location": other.url("/v2/final?page=1")})
        return web.Response(status=307, headers={"Location": f"/v1/hop?n={n + 1}"})

    start = await servers(hop)
    guard = AddressGuard(enabled=True, allowed_hosts=frozenset({"127.0.0.0/8"}))
    http = client(guard)
    try:
        body, _ = await http.request_json("GET", start.url("/v1/hop"), headers={
            "X-API-Key": "k-1", "Authorization": "Bearer t-1", "Accept": "*/*"})
    finally:
        await http.session.close()
    assert body == {"data": "moved"} and start.hits == 3 and other.hits == 1
    assert all(h.get("X-API-Key") == "k-1" and "Authorization" in h for h in start.headers)
    assert "X-API-Key" not in other.headers[0] and "Authorization" not in other.headers[0]

    async def loop_forever(request, server):
        return web.Response(status=302, headers={"Location": "/again"})

    looping = await servers(loop_forever)
    http = client(guard)
    try:
        with pytest.raises(PermanentStepError) as caught:
            await http.request_json("GET", looping.url())
    finally:
        await http.session.close()
    assert caught.value.code == "PROVIDER_TOO_MANY_REDIRECTS" and looping.hits == 6


async def test_dns_rebinding_connects_only_to_the_checked_address(servers, tmp_path):
    # The name first answers an allowed address, then loopback: each connection goes to what was checked.
    server_tls, client_tls = tls(tmp_path, ["rebind.test"])
    outside = await servers(public, host="127.0.0.2", ssl_context=server_tls)
    internal = await servers(secret, host="127.0.0.1", ssl_context=server_tls)
    guard = AddressGuard(enabled=True, allowed_hosts=frozenset({"127.0.0.2"}))
    names = NameServer({"rebind.test": ["127.0.0.2", "127.0.0.1"]})
    # No DNS cache and no keep-alive, so every request looks the name up again.
    http = client(guard, names, use_dns_cache=False, force_close=True, ssl=client_tls)
    try:
        body, _ = await http.request_json("GET", f"https://rebind.test:{outside.port}/x")
        with pytest.raises(BlockedAddress) as caught:
            await http.request_json("GET", f"https://rebind.test:{internal.port}/x")
    finally:
        await http.session.close()
    assert body == {"data": "public"} and outside.hits == 1
    assert caught.value.code == "BLOCKED_ADDRESS" and "loopback" in str(caught.value)
    assert internal.hits == 0
    assert names.lookups == [("rebind.test", "127.0.0.2"), ("rebind.test", "127.0.0.1")]  # one lookup per connection


async def test_an_unguarded_session_is_refused_when_the_guard_is_on():
    # A session without the guarded resolver would look the name up a second time, after the check.
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="AddressGuard.session"):
            HttpClient(session, "vendor", guard=AddressGuard(enabled=True))


async def dual_stack(handler, ssl_context) -> Server:
    """A server on [::] accepting IPv4 too, so an IPv4-mapped IPv6 address really reaches it."""
    server = Server(handler, host="::")
    app = web.Application()

    async def handle(request):
        server.hits += 1
        return await handler(request, server)

    app.router.add_route("*", "/{tail:.*}", handle)
    server.runner = web.AppRunner(app)
    await server.runner.setup()
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0))
    await web.SockSite(server.runner, sock, ssl_context=ssl_context).start()
    server.port = sock.getsockname()[1]
    return server


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
async def test_each_address_family_is_checked_in_the_connector(servers, address, tmp_path):
    server_tls, client_tls = tls(tmp_path, ["internal.test"])
    mapped = address.startswith("::ffff:")
    internal = await (dual_stack(secret, server_tls) if mapped else servers(secret, host=address,
                                                                              ssl_context=server_tls))
    url = f"https://internal.test:{internal.port}/x"
    try:
        refused = client(AddressGuard(enabled=True), NameServer({"internal.test": [address]}), ssl=client_tls)
        try:
            with pytest.raises(BlockedAddress) as caught:
                await refused.request_json("GET", url)
        finally:
            await refused.session.close()
        assert caught.value.code == "BLOCKED_ADDRESS" and internal.hits == 0

        # Control: with the address allow-listed, the very same answer reaches the server.
        allowed = client(AddressGuard(enabled=True, allowed_hosts=frozenset({address})),
                         NameServer({"internal.test": [address]}), ssl=client_tls)
        try:
            body, _ = await allowed.request_json("GET", url)
        finally:
            await allowed.session.close()
        assert body == {"secret": SECRET_BODY} and internal.hits == 1
    finally:
        if mapped:
            await internal.runner.cleanup()


async def test_services_http_in_production_is_guarded_at_connect_time(servers):
    internal = await servers(secret)
    settings = load_settings(environment="production", gcp_project_id="ssrf-test", outbound_allowed_hosts=[])
    services = Services(settings)
    try:
        http = services.http("vendor", policy=FAST)
        with pytest.raises(BlockedAddress):
            # localhost passes every check that needs no lookup; the connector's resolver refuses it.
            await http.request_json("GET", f"https://localhost:{internal.port}/x")
    finally:
        await services.aclose()
    assert internal.hits == 0


def slack_settings(allowed: list[str]):
    return load_settings(environment="production", gcp_project_id="ssrf-test", outbound_allowed_hosts=allowed)


async def test_slack_webhook_redirects_are_refused(servers):
    internal = await servers(secret)

    async def redirect(request, server):
        return web.Response(status=302, headers={"Location": internal.url("/latest")})

    hook = await servers(redirect)
    sender = SlackSender(slack_settings(["hooks.slack.test"]), resolver=NameServer({"hooks.slack.test": ["127.0.0.1"]}))
    path = "/services/T000/B000/secret-webhook-path"
    with pytest.raises(NotificationError) as caught:
        await sender.send(f"http://hooks.slack.test:{hook.port}{path}", {"text": "run failed"})
    assert "redirect" in str(caught.value) and "secret-webhook-path" not in str(caught.value)
    assert hook.hits == 1 and internal.hits == 0


async def test_slack_webhook_rebinding_is_refused_in_the_connector(servers, tmp_path):
    async def slack_ok(request, server):
        return web.Response(text="ok")

    server_tls, client_tls = tls(tmp_path, ["hooks.slack.invalid"])
    hook = await servers(slack_ok, host="127.0.0.2", ssl_context=server_tls)
    internal = await servers(secret, host="127.0.0.1", ssl_context=server_tls)
    # The name answers the allowed address once, then loopback; the system resolver knows nothing of it,
    # so the check before sending cannot refuse it and only the connector's lookup decides.
    names = NameServer({"hooks.slack.invalid": ["127.0.0.2", "127.0.0.1"]})
    sender = SlackSender(slack_settings(["127.0.0.2"]), resolver=names, ssl_context=client_tls)
    path = "/services/T000/B000/secret-webhook-path"
    await sender.send(f"https://hooks.slack.invalid:{hook.port}{path}", {"text": "run failed"})
    with pytest.raises(NotificationError) as caught:
        await sender.send(f"https://hooks.slack.invalid:{internal.port}{path}", {"text": "run failed"})
    assert "refused" in str(caught.value) and "secret-webhook-path" not in str(caught.value)
    assert hook.hits == 1 and internal.hits == 0
    assert names.lookups == [("hooks.slack.invalid", "127.0.0.2"), ("hooks.slack.invalid", "127.0.0.1")]


async def test_a_service_account_token_endpoint_that_redirects_is_refused_and_the_target_never_hit():
    """google-auth follows redirects by default; the assertion (signed with the org's key) must never be
    carried to the Location of a 302."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from convergence.processors.gcp._auth import ServiceAccountKey, credentials_for

    hits: list[str] = []

    async def token(request: web.Request) -> web.Response:
        hits.append("token")
        raise web.HTTPFound("/internal")

    async def internal(request: web.Request) -> web.Response:
        hits.append("internal")
        return web.json_response({"access_token": "stolen", "expires_in": 3600, "token_type": "Bearer"})

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_post("/internal", internal)
    app.router.add_get("/internal", internal)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    key = ServiceAccountKey.parse({"type": "service_account", "project_id": "p", "private_key_id": "k1",
                                   "private_key": pem, "client_email": "sa@p.iam.gserviceaccount.com",
                                   "client_id": "1", "token_uri": f"http://127.0.0.1:{port}/token"})
    try:
        with pytest.raises(PermanentStepError) as refused:
            await credentials_for(key, ("https://www.googleapis.com/auth/cloud-platform",), load_settings())
        assert refused.value.code == "PROVIDER_AUTH_FAILED" and pem not in str(refused.value)
        assert hits == ["token"]  # the redirect was not followed
    finally:
        await runner.cleanup()
