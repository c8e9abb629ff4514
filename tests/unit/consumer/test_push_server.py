"""run_server: a real process on a real port, stopped with SIGTERM while a push is in flight."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest

from convergence.consumer.http_app import create_app, run_server
from convergence.consumer.outcome import Outcome, OutcomeKind
from convergence.devstack.ports import free_port
from convergence.settings.model import load_settings
from tests.paths import REPO_ROOT

SERVER_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from convergence.consumer.http_app import Lifecycle, create_app, run_server
    from convergence.consumer.outcome import Outcome, OutcomeKind
    from convergence.settings.model import load_settings

    port, handler_seconds, grace = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])

    def say(line):
        print(f"@@ {line}", flush=True)  # structlog's default output shares stdout

    class SlowHandler:
        async def handle(self, data, attributes, message_id, delivery_attempt, *, deadline_seconds=None):
            say(f"handling {message_id}")
            try:
                await asyncio.sleep(handler_seconds)
            except asyncio.CancelledError:
                say(f"cancelled {message_id}")
                raise
            say(f"handled {message_id}")
            return Outcome(OutcomeKind.SUCCEEDED)

    async def hook(name):
        say(name)

    settings = load_settings(environment="development", push_verify_token=False,
                             shutdown_grace_seconds=grace, push_ack_deadline_seconds=60)
    app = create_app(settings, SlowHandler(), lifecycle=[
        Lifecycle(startup=lambda: hook("startup"), shutdown=lambda: hook("shutdown"),
                  cleanup=lambda: hook("cleanup")),
    ])
    asyncio.run(run_server(app, "127.0.0.1", port))
    say("exited cleanly")
""")


def _envelope(message_id: str) -> dict:
    return {"subscription": "projects/p-local/subscriptions/push",
            "message": {"data": base64.b64encode(b"{}").decode(), "messageId": message_id}}


async def _wait_healthy(base: str, process: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.poll() is None, "server exited early"
            try:
                async with session.get(f"{base}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("server did not become healthy")


def _start(tmp_path: Path, handler_seconds: float, grace: float) -> tuple[subprocess.Popen, str]:
    script = tmp_path / "serve.py"
    script.write_text(SERVER_SCRIPT)
    port = free_port()
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath, "LOG_FORMAT": "json"}
    process = subprocess.Popen([sys.executable, str(script), str(port), str(handler_seconds), str(grace)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return process, f"http://127.0.0.1:{port}"


def _said(process: subprocess.Popen) -> list[str]:
    return [line[3:] for line in process.stdout.read().splitlines() if line.startswith("@@ ")]


async def _wait_exit(process: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if process.poll() is None:
        process.kill()
        raise AssertionError("server did not exit after SIGTERM")
    return process.returncode


@pytest.mark.slow
async def test_sigterm_lets_the_in_flight_push_finish_then_exits_0(tmp_path: Path) -> None:
    process, base = _start(tmp_path, handler_seconds=1.5, grace=10)
    try:
        await _wait_healthy(base, process)
        async with aiohttp.ClientSession() as session:
            push = asyncio.create_task(session.post(f"{base}/pubsub/push", json=_envelope("m-1")))
            await asyncio.sleep(0.5)  # the handler is running now
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            response = await push
            assert response.status == 204
        assert await _wait_exit(process, 15) == 0
        stopped_in = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    out = _said(process)
    assert out == ["startup", "handling m-1", "shutdown", "handled m-1", "cleanup",
                                "exited cleanly"], process.stderr.read()
    assert stopped_in < 5


@pytest.mark.slow
async def test_a_push_still_running_after_the_grace_period_is_cut_and_the_process_exits_0(
        tmp_path: Path) -> None:
    process, base = _start(tmp_path, handler_seconds=60, grace=0.5)
    try:
        await _wait_healthy(base, process)
        async with aiohttp.ClientSession() as session:
            push = asyncio.create_task(session.post(f"{base}/pubsub/push", json=_envelope("m-2")))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            # No answer at all: the connection drops, which Pub/Sub treats as a nack (redelivery).
            with pytest.raises(aiohttp.ClientError):
                await push
        assert await _wait_exit(process, 15) == 0
        assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()
    out = _said(process)
    assert out == ["startup", "handling m-2", "shutdown", "cancelled m-2", "cleanup", "exited cleanly"]


async def test_run_server_stops_when_asked() -> None:
    class Handler:
        async def handle(self, data, attributes, message_id, delivery_attempt, *, deadline_seconds=None):
            return Outcome(OutcomeKind.SUCCEEDED)

    port = free_port()
    app = create_app(load_settings(environment="local", push_verify_token=False), Handler())
    stop = asyncio.Event()
    server = asyncio.create_task(run_server(app, "127.0.0.1", port, stop=stop, handle_signals=False))
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.post(f"http://127.0.0.1:{port}/pubsub/push", json=_envelope("m")) as r:
                    assert r.status == 204
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("server never answered")
    stop.set()
    await asyncio.wait_for(server, 10)
