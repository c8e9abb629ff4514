"""`convergence consume` as a real process on the local stack: a deleted subscription ends it non-zero
with one clear log line; SIGTERM with runs longer than the grace ends it within Cloud Run's 10 s, code 0,
and every message not acked comes back."""

from __future__ import annotations

import contextlib
import json
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.harness import ConsumerProcess, Platform

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

SPY = Path(__file__).parent / "pubsub_spy"
# Cloud Run sends SIGKILL this long after SIGTERM (Cloud Run docs, "Container runtime contract").
CLOUD_RUN_SIGTERM_SECONDS = 10


def log_lines(path):
    lines = []
    for raw in path.read_text().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            lines.append({"message": raw, "raw": True})
    return lines


def wait_for_line(path, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and any(predicate(line) for line in log_lines(path)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no such log line in {path} within {timeout}s:\n{path.read_text()[-3000:]}")


def no_tracebacks(path):
    text = path.read_text()
    assert "Traceback" not in text, text[-4000:]
    assert "Cannot invoke RPC" not in text, text[-4000:]


@pytest.fixture
def platform(local_stack, tmp_path):
    from convergence.settings.model import Settings

    # The production grace period, not the harness's; short leases (see the SIGTERM test).
    platform = Platform(local_stack, tmp_path, consumer_workers=2, per_org_concurrency=1,
                        ack_deadline_seconds=10, max_lease_extension_seconds=10,
                        shutdown_grace_seconds=Settings.model_fields["shutdown_grace_seconds"].default)
    platform.onboard("term_org")
    yield platform
    platform.close()


def test_deleting_the_requests_subscription_ends_the_process_non_zero_with_one_log_line(platform, tmp_path):
    from convergence.infra.clients import subscriber_client

    log_path = tmp_path / "deleted.log"
    subscription = platform.settings.subscription_path(platform.settings.requests_subscription)
    consumer = ConsumerProcess(platform.settings, log_path)
    try:
        wait_for_line(log_path, lambda line: line.get("message") == "subscriber started"
                      and line.get("subscription") == subscription)
        client = subscriber_client(platform.settings)
        deleted = time.monotonic()
        client.delete_subscription(request={"subscription": subscription})
        client.close()
        code = consumer.wait(30)
        took = time.monotonic() - deleted
    finally:
        consumer.kill()
    print(f"exit {code} {took:.1f} s after the subscription was deleted")
    assert code == 1
    assert took < 20, took
    lines = log_lines(log_path)
    lost = [line for line in lines if line.get("level") == "error" and line.get("subscription") == subscription]
    assert len(lost) == 1, lost
    assert "stopping the process so it is restarted" in lost[0]["message"]
    assert "NotFound" in lost[0]["reason"]
    assert any(line.get("message") == "exiting with code 1: a streaming pull was lost" for line in lines)
    no_tracebacks(log_path)


def spied_rpcs(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_sigterm_with_runs_longer_than_the_grace_exits_0_within_10_s_and_loses_nothing(platform, tmp_path):
    import os

    settings = platform.settings
    # Two workers, one slot per org: two runs of two orgs start, the third waits for its org's slot.
    platform.onboard("term_other")
    long_run = {"seconds": 60}
    ids = [platform.publish("term_org", "testing/consumer/ok", long_run, run_id=f"run_{uuid.uuid4().hex}"),
           platform.publish("term_other", "testing/consumer/ok", long_run, run_id=f"run_{uuid.uuid4().hex}"),
           platform.publish("term_org", "testing/consumer/ok", long_run, run_id=f"run_{uuid.uuid4().hex}")]
    log_path, spy_path = tmp_path / "term.log", tmp_path / "rpcs.jsonl"
    # Every ack / modack the process sends is recorded with Pub/Sub's answer (pubsub_spy/sitecustomize.py).
    pythonpath = os.pathsep.join([str(SPY), *filter(None, [os.environ.get("PYTHONPATH")])])
    consumer = ConsumerProcess(settings, log_path, PYTHONPATH=pythonpath, CONVERGENCE_PUBSUB_SPY=str(spy_path))
    try:
        for run_id in ids[:2]:
            platform.follower.wait_for(run_id, "step_started", timeout=60)
        sent = time.monotonic()
        consumer.signal(signal.SIGTERM)
        code = consumer.wait(CLOUD_RUN_SIGTERM_SECONDS + 20)
        took = time.monotonic() - sent
    finally:
        consumer.kill()
    print(f"exit {code} {took:.2f} s after SIGTERM")
    assert code == 0
    assert took < CLOUD_RUN_SIGTERM_SECONDS, took
    no_tracebacks(log_path)
    lines = log_lines(log_path)
    stopped = [line for line in lines if line.get("message") == "subscriber stopped"]
    assert sum(line["acked"] for line in stopped) == 0
    assert sum(line["nacked"] for line in stopped) == sum(line["received"] for line in stopped) == 3
    assert any(line.get("message") == "runs cancelled after the grace period; nacking" for line in lines)
    # The run-log rows of the started runs were written before the exit.
    for run_id in ids[:2]:
        assert platform.services.runlog.latest_run(run_id) is not None
    # Nothing lost: each of the three deliveries (leased while it waited or ran) was nacked, and Pub/Sub
    # accepted the nack, before the process ended. (The emulator then often keeps a nacked message of a
    # stream that has closed from later pulls when the subscription has a retry policy; Pub/Sub redelivers
    # it after the backoff.)
    requests_sub = settings.subscription_path(settings.requests_subscription)
    rpcs = [rpc for rpc in spied_rpcs(spy_path) if rpc["subscription"] == requests_sub]
    modacks = [rpc for rpc in rpcs if rpc["rpc"] == "modify_ack_deadline"]
    leased = {ack for rpc in modacks if rpc["seconds"] for ack in rpc["ack_ids"]}
    nacked = {ack for rpc in modacks if rpc["seconds"] == 0 and rpc["ok"] for ack in rpc["ack_ids"]}
    assert len(leased) == 3 and leased <= nacked, rpcs
    assert not [rpc for rpc in rpcs if rpc["rpc"] == "acknowledge"]


class CuttableProxy:
    """A TCP forwarder to the Pub/Sub emulator that the test can cut: Pub/Sub becomes unreachable."""

    def __init__(self, target: str):
        import socket
        import threading

        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list = []
        self.cut_off = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while not self.cut_off.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self):
        import socket

        self.cut_off.set()
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def get_json(url):
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local test server
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_health_stops_being_ok_when_pubsub_becomes_unreachable(platform, tmp_path):
    import socket

    from convergence.consumer.pool import PROBE_SECONDS

    proxy = CuttableProxy(platform.settings.pubsub_emulator_host)
    with socket.socket() as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    log_path = tmp_path / "unreachable.log"
    consumer = ConsumerProcess(platform.settings, log_path, PUBSUB_EMULATOR_HOST=proxy.address,
                               METRICS_PORT=str(port), HTTP_HOST="127.0.0.1")
    try:
        wait_for_line(log_path, lambda line: line.get("message") == "metrics listening")
        status, body = get_json(f"http://127.0.0.1:{port}/health")
        assert status == 200 and body["status"] == "ok", body
        assert {p["stream"] for p in body["pools"]} == {"open"}
        assert all(p["last_pull_age_seconds"] is not None for p in body["pools"])
        proxy.cut()
        wait_for_line(log_path, lambda line: line.get("message") == "Pub/Sub unreachable",
                      timeout=PROBE_SECONDS + 20)
        status, body = get_json(f"http://127.0.0.1:{port}/health")
        assert status == 503 and body["status"] == "unavailable", body
        assert any(p["reachable"] is False for p in body["pools"])
        assert get_json(f"http://127.0.0.1:{port}/ready")[0] == 503
        sent = time.monotonic()
        consumer.signal(signal.SIGTERM)
        code = consumer.wait(CLOUD_RUN_SIGTERM_SECONDS + 20)
        took = time.monotonic() - sent
        print(f"unreachable: exit {code} {took:.2f} s after SIGTERM")
        assert code == 0 and took < CLOUD_RUN_SIGTERM_SECONDS, (code, took)
        no_tracebacks(log_path)
    finally:
        consumer.kill()
        proxy.cut()
