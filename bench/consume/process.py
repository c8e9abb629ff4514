"""The consumer under test: `python -m convergence consume` in its own process, its /metrics, and the
CPU and RSS of the stack's processes from /proc."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.consume import ROOT

CLK_TCK = os.sysconf("SC_CLK_TCK")
SUCCEEDED = re.compile(r'^convergence_outcomes_total\{([^}]*)\} ([^ ]+)$', re.MULTILINE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_env(settings: Any) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None or name == "ca_root_api_key":
            continue
        env[name.upper()] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return env


def die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the benchmark process dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class ConsumerProcess:
    """`python -m convergence consume`, exactly as production starts it, with the bench's settings."""

    def __init__(self, settings: Any, log_path: Path):
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "convergence", "consume"], cwd=ROOT, env={**os.environ, **settings_env(settings)},
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)  # noqa: PLW1509
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)  # drains and stops, as on a deploy
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
        self.log.close()
        return code


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int | None) -> float:
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


def find_pid(*needles: str) -> int | None:
    """The process whose command line contains every needle (the emulators of this run's stack)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(needle in cmdline for needle in needles) and "setpriv" not in cmdline.split(" ", 1)[0]:
            return int(entry.name)
    return None


class CpuMeter:
    """CPU seconds of each process of the stack over one phase."""

    def __init__(self, pids: dict[str, int | None]):
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        used = {name: cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}
        used["wall_s"] = time.perf_counter() - self.t0
        return used


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(daemon=True, name="rss-sampler")
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(rss_kb(self.pid))
            self._stop_event.wait(self.interval)

    def stop(self) -> list[int]:
        self._stop_event.set()
        self.join(5)
        return self.samples


class MetricsPoller(threading.Thread):
    """Scrapes the consumer's /metrics every `interval` s over one kept-alive connection and keeps (time,
    succeeded outcomes on its requests subscription); `fresh()` returns the text of a scrape sent after
    the call (for the histogram deltas)."""

    def __init__(self, port: int, subscription: str, interval: float = 0.1):
        super().__init__(daemon=True, name="metrics-poller")
        self.port, self.subscription, self.interval = port, subscription, interval
        self.lock = threading.Condition()
        self.samples: list[tuple[float, float]] = []
        self.latest = ""
        self.polls = self.errors = 0
        self._conn: http.client.HTTPConnection | None = None
        self._stop_event = threading.Event()

    def fetch(self) -> str | None:
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self._conn.request("GET", "/metrics")
            response = self._conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise http.client.HTTPException(f"HTTP {response.status}")
        except (OSError, http.client.HTTPException):
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return None
        return body.decode(errors="replace")

    def succeeded(self, text: str) -> float:
        wanted = ('outcome="succeeded"', f'subscription="{self.subscription}"')
        return sum(float(value) for labels, value in SUCCEEDED.findall(text) if all(w in labels for w in wanted))

    def run(self) -> None:
        while not self._stop_event.is_set():
            sent = time.perf_counter()
            text = self.fetch()
            received = time.perf_counter()
            with self.lock:
                if text is None:
                    self.errors += 1
                else:
                    # the counters were read between sending and receiving: take the middle
                    self.samples.append(((sent + received) / 2, self.succeeded(text)))
                    self.latest = text
                    self.polls += 1
                self.lock.notify_all()
            self._stop_event.wait(max(0.0, self.interval - (time.perf_counter() - sent)))
        if self._conn is not None:
            self._conn.close()

    def value(self) -> float:
        with self.lock:
            return self.samples[-1][1] if self.samples else 0.0

    def fresh(self, timeout: float = 30) -> str:
        with self.lock:
            target = self.polls + 2
            if not self.lock.wait_for(lambda: self.polls >= target, timeout):
                raise RuntimeError(f"no /metrics answer from the consumer on port {self.port}")
            return self.latest

    def wait_for(self, count: float, timeout: float, progress: Callable[[int], None] | None = None,
                 base: float = 0.0) -> int:
        """Until `count` runs succeeded (absolute counter value); returns how many above `base`."""
        deadline = time.monotonic() + timeout
        while True:
            done = int(self.value() - base)
            if progress:
                progress(done)
            if self.value() >= count or time.monotonic() > deadline:
                return done
            time.sleep(0.1)

    def crossing(self, count: float) -> float:
        """When the counter reached `count`: linear between the last scrape below it and the first at it."""
        with self.lock:
            samples = list(self.samples)
        for i, (when, value) in enumerate(samples):
            if value >= count:
                if i == 0:
                    return when
                before, below = samples[i - 1]
                return before + (when - before) * (count - below) / max(1e-9, value - below)
        raise ValueError(f"the counter never reached {count}")

    def stop(self) -> None:
        self._stop_event.set()
        self.join(15)
