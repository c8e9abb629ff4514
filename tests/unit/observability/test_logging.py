"""Log lines in Cloud Logging's shape, with run ids bound to every line and secrets masked."""

import json

import pytest
import structlog

from convergence.observability.logging import configure_logging, run_context


def capture(capsys, fn):
    configure_logging("INFO", "json", project_id="proj-test")
    fn()
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]


def test_json_lines_have_severity_message_and_trace(capsys):
    def emit():
        with run_context(run_id="run_1", org_slug="acme", trace_id="abc123"):
            structlog.get_logger("t").warning("step failed", step_id="extract")
        structlog.get_logger("t").info("outside")

    inside, outside = capture(capsys, emit)
    assert inside["severity"] == "WARNING" and inside["message"] == "step failed"
    assert inside["run_id"] == "run_1" and inside["org_slug"] == "acme" and inside["step_id"] == "extract"
    assert inside["logging.googleapis.com/trace"] == "projects/proj-test/traces/abc123"
    assert "run_id" not in outside and outside["severity"] == "INFO"


def test_secret_looking_fields_are_masked(capsys):
    def emit():
        structlog.get_logger("t").info("calling", api_key="sk-live-123", token="t0k3n", credential_id="cred_9")

    (line,) = capture(capsys, emit)
    assert line["api_key"] == "[REDACTED]" and line["token"] == "[REDACTED]"
    assert line["credential_id"] == "cred_9"  # ids are not secrets
    assert "sk-live-123" not in json.dumps(line)


def test_secrets_in_free_text_are_masked(capsys):
    key = "acme_corp_api_" + "Q7w8E9r0T1y2U3i4"
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"

    def emit():
        log = structlog.get_logger("t")
        log.warning(f"header line b'X-API-Key: {key}\\n'", error=f"Authorization: Bearer {jwt}")
        log.info("called", url="https://api.example.com/v1?token=tok123456&page=2",
                 headers={"X-API-Key": key, "Accept": "json"}, items=[f"key {key}"])
        log.info("the token expired")  # prose: nothing to mask

    first, second, third = capture(capsys, emit)
    text = json.dumps([first, second])
    assert key not in text and jwt not in text and "tok123456" not in text
    assert first["message"] == "header line b'X-API-Key: [REDACTED]\\n'"
    assert first["error"] == "Authorization: [REDACTED]"
    assert second["url"] == "https://api.example.com/v1?token=[REDACTED]&page=2"
    assert second["headers"] == {"X-API-Key": "[REDACTED]", "Accept": "json"}
    assert third["message"] == "the token expired"


def test_standard_library_loggers_render_as_masked_json(capsys):
    import logging

    key = "acme_corp_api_" + "Q7w8E9r0T1y2U3i4"

    def emit():
        logging.getLogger("aiohttp.access").warning('127.0.0.1 "GET /x?api_key=%s HTTP/1.1" 400', "abc123secret")
        try:
            raise ValueError(f"bad header X-API-Key: {key}")
        except ValueError:
            logging.getLogger("asyncio").exception("task failed")

    access, failure = capture(capsys, emit)
    assert access["logger"] == "aiohttp.access" and access["severity"] == "WARNING"
    assert "api_key=[REDACTED]" in access["message"] and "abc123secret" not in json.dumps(access)
    assert failure["severity"] == "ERROR" and "ValueError" in failure["exception"]
    assert key not in json.dumps(failure) and "X-API-Key: [REDACTED]" in failure["exception"]


# ---- the real `serve` process: raw malformed requests, every captured line ------------------------------


def _raw_request(port: int, data: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.emulator
@pytest.mark.slow
def test_serve_logs_no_secret_from_malformed_requests(local_stack, tmp_path):
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from convergence.devstack.ports import free_port
    from tests.harness import REPO, Platform, settings_env

    platform = Platform(local_stack, tmp_path)
    try:
        key = platform.onboard("logs_org").api_key  # a real, valid org key
        root_key = "root-" + "R" * 40
        token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhdHRhY2tlciJ9.ZmFrZXNpZ25hdHVyZWZha2U"
        port = free_port()
        env = {**os.environ, **settings_env(platform.settings), "LOG_FORMAT": "json", "LOG_LEVEL": "INFO",
               "PUSH_VERIFY_TOKEN": "false", "CA_ROOT_API_KEY": root_key}
        out, err = (tmp_path / "stdout.log").open("wb"), (tmp_path / "stderr.log").open("wb")
        process = subprocess.Popen([sys.executable, "-m", "convergence", "serve", "--host", "127.0.0.1",
                                    "--port", str(port)], cwd=REPO, env=env, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    assert process.poll() is None, (tmp_path / "stderr.log").read_text()
                    assert time.monotonic() < deadline, "serve did not start"
                    time.sleep(0.2)
            run = "/api/v1/pipelines/run/logs_org/testing/consumer/ok"
            malformed = [
                f"POST {run} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\n\r\n",  # bare LF after the key
                f"POST {run} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\n\r\n",
                f"GET /api/v1/procedures HTTP/1.1\r\nX-CA-Root-Key: {root_key}\n\r\n",
                f"POST {run} HTTP/1.1\nX-API-Key: {key}\nAuthorization: Bearer {token}\n\n",  # LF only
                f"POST {run} HTTP/1.1\r\nX-API-Key: {key}\r\nBad Header {token}\r\n\r\n",
                f"POST {run} HTTP/1.1\r\nX-API-Key: {key}\x00\r\n\r\n",
                f"POST {run} HTTP/1.1\r\nX-API-Key: {key}" + "x" * 9000 + "\r\n\r\n",  # line too long
                f"POST {run}?api_key={key}&token={token} HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
            ]
            for data in malformed:
                answer = _raw_request(port, data.encode())
                assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0], answer[:200]
            # well-formed calls that carry the same secrets (refused, and one accepted)
            well_formed = [
                f"POST {run}?token={token} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Length: 3\r\n"
                f"Connection: close\r\n\r\n{{x:",
                f"GET /api/v1/procedures HTTP/1.1\r\nHost: x\r\nX-CA-Root-Key: {root_key}x\r\n"
                f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n",
                f"POST {run} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Length: 2\r\n"
                f"Connection: close\r\n\r\n{{}}",
            ]
            statuses = [_raw_request(port, data.encode()).split(b"\r\n", 1)[0] for data in well_formed]
            assert [s.split(b" ")[1] for s in statuses] == [b"400", b"403", b"202"], statuses
        finally:
            process.terminate()
            process.wait(30)
            out.close()
            err.close()
    finally:
        platform.close()

    lines = [line for name in ("stdout.log", "stderr.log")
             for line in (tmp_path / name).read_text(errors="replace").splitlines() if line.strip()]
    assert lines
    for line in lines:
        json.loads(line)  # every line is JSON: no plain-text `ERROR:aiohttp.server` line, no bare traceback
        for secret in (key, key[-16:], token, token.split(".")[1], root_key):
            assert secret not in line, line
    refused = [json.loads(line) for line in lines if "malformed HTTP request refused" in line]
    assert len(refused) >= 6 and {r["logger"] for r in refused} == {"aiohttp.server"}, lines
    assert any("X-API-Key: [REDACTED]" in r["message"] for r in refused)
    assert any("Authorization: [REDACTED]" in r["message"] for r in refused)
