"""The provider HTTP client over real HTTP: backoff honouring Retry-After, error mapping, SSRF guard."""

import time

import aiohttp
import pytest
from aiohttp import web

from convergence.httpclient import AddressGuard, BlockedAddress, HttpClient, RetryPolicy
from convergence.pipeline.errors import PermanentStepError, TransientStepError

FAST = RetryPolicy(attempts=4, initial_seconds=0.01, max_seconds=0.05)


@pytest.fixture
async def serve():
    runners = []

    async def start(handler):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_429_is_retried_after_the_retry_after_delay(serve):
    calls = []

    async def handler(request):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "0.3"})
        return web.json_response({"data": [1, 2]})

    base = await serve(handler)
    async with aiohttp.ClientSession() as session:
        body, _ = await HttpClient(session, "openai", policy=FAST).request_json("GET", f"{base}/v1/x")
    assert body == {"data": [1, 2]}
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.29


async def test_401_is_permanent_and_not_retried(serve):
    calls = []

    async def handler(request):
        calls.append(1)
        return web.json_response({"error": {"message": "Incorrect API key"}}, status=401)

    base = await serve(handler)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(PermanentStepError) as caught:
            await HttpClient(session, "openai", policy=FAST).request_json("GET", f"{base}/v1/x?key=sk-secret")
    assert caught.value.code == "PROVIDER_AUTH_FAILED"
    assert "sk-secret" not in str(caught.value)
    assert len(calls) == 1


async def test_5xx_exhausts_retries_then_is_transient(serve):
    calls = []

    async def handler(request):
        calls.append(1)
        return web.Response(status=503, text="unavailable")

    base = await serve(handler)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransientStepError) as caught:
            await HttpClient(session, "anthropic", policy=FAST).request_json("GET", f"{base}/v1/x")
    assert caught.value.code == "PROVIDER_UNAVAILABLE" and caught.value.retryable
    assert len(calls) == FAST.attempts


async def test_400_is_permanent(serve):
    async def handler(request):
        return web.json_response({"error": "bad bucket_width"}, status=400)

    base = await serve(handler)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(PermanentStepError, match="bad bucket_width"):
            await HttpClient(session, "openai", policy=FAST).request_json("GET", f"{base}/v1/x")


async def test_connection_refused_is_transient():
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransientStepError) as caught:
            await HttpClient(session, "openai", policy=FAST).request_json("GET", "http://127.0.0.1:1/v1/x")
    assert caught.value.code == "PROVIDER_NETWORK_ERROR"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "https://127.0.0.1/x", "https://169.254.169.254/computeMetadata/v1/",
    "https://10.0.0.1/x", "https://[::1]/x", "file:///etc/passwd", "https://localhost/x",
])
async def test_guard_refuses_internal_addresses(url):
    guard = AddressGuard(enabled=True)
    with pytest.raises(BlockedAddress):
        await guard.check(url)


async def test_guard_allow_list_and_disabled_mode():
    await AddressGuard(enabled=True, allowed_hosts=frozenset({"127.0.0.1"})).check("http://127.0.0.1:9/x")
    await AddressGuard(enabled=False).check("http://127.0.0.1:9/x")
