"""Child processes for the emulators: start, watch and stop them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from convergence.devstack.errors import EmulatorStartError
from convergence.devstack.ports import LOOPBACK, free_port
from convergence.devstack.workdir import WorkDir

log = structlog.get_logger(__name__)


class ManagedProcess:
    """One command run in its own process group, its output sent to a log file.

    The group matters: gcloud starts the Pub/Sub emulator's JVM as a child, and
    stopping only gcloud would leave that JVM running. Where util-linux's
    ``setpriv`` exists the child also gets SIGTERM when the thread that started
    it ends, so a killed test run does not leave emulators behind; start it from
    a thread that lives as long as the process should (normally the main thread).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = _die_with_parent(argv)
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            # The child keeps its own copy of the descriptor; ours can close.
            self._popen = subprocess.Popen(  # noqa: S603 (argv is built by devstack, not user input)
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
            )
        log.debug("process.started", name=self.name, pid=self._popen.pid, log=str(self.log_path))

    @property
    def exit_code(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return None if self._popen is None else self._popen.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the whole process group; kill it if it outlives ``timeout``. Idempotent."""
        if self._popen is None:
            return
        pgid = self._popen.pid  # session leader, so its pid is the group id
        if _signal_group(pgid, signal.SIGTERM) and not _wait_group_gone(self._popen, pgid, timeout):
            log.warning("process.kill", name=self.name, pid=pgid, after_seconds=timeout)
            _signal_group(pgid, signal.SIGKILL)
            _wait_group_gone(self._popen, pgid, timeout)
        self._popen = None


def _die_with_parent(argv: Sequence[str]) -> list[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:  # not Linux, or no util-linux: atexit/stop() still clean up
        return list(argv)
    return [setpriv, "--pdeathsig", "TERM", "--", *argv]


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _wait_group_gone(popen: subprocess.Popen[bytes], pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        popen.poll()  # reap the leader, or it stays in the group as a zombie
        if not _signal_group(pgid, 0):
            return True
        time.sleep(0.05)
    return False


def wait_until_ready(
    process: ManagedProcess,
    is_ready: Callable[[], bool],
    timeout: float,
    waiting_for: str,
    poll_interval: float = 0.05,
) -> None:
    """Poll ``is_ready`` until it holds; fail early if the process exits.

    The error carries the tail of the process's log, which is where the reason is.
    """
    deadline = time.monotonic() + timeout
    while not is_ready():
        code = process.exit_code
        if code is not None:
            reason = f"exited with code {code} before {waiting_for}"
        elif time.monotonic() > deadline:
            reason = f"was not ready after {timeout:.0f}s (waiting for {waiting_for})"
        else:
            time.sleep(poll_interval)
            continue
        raise EmulatorStartError(
            f"{process.name} {reason}.\nCommand: {' '.join(process.argv)}\n"
            f"Last lines of {process.log_path}:\n{process.log_tail()}"
        )


class EmulatorProcess:
    """What both emulators share: a loopback port, a work directory, one child process, a readiness probe.

    Subclasses say how to start (`argv`, `log_name`, `env`) and how to tell it is ready (`ready`)."""

    name = "emulator"
    work_prefix = "convergence-emulator-"
    log_name = "emulator.log"
    waiting_for = "it to answer"
    ready_event = "emulator.ready"

    def __init__(self, port: int | None, project: str, work_dir: Path | None, startup_timeout: float) -> None:
        self.port = port if port is not None else free_port()
        self.project = project  # the emulators accept any project id without creating it first
        self._work_dir_arg = work_dir
        self._startup_timeout = startup_timeout
        self._work_dir: WorkDir | None = None
        self._process: ManagedProcess | None = None

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def argv(self, work_dir: Path) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process without waiting, so another emulator can boot meanwhile."""
        self._work_dir = WorkDir(self.work_prefix, self._work_dir_arg)
        self._process = ManagedProcess(self.name, self.argv(self._work_dir.path), self._work_dir.path / self.log_name,
                                       self.env())
        self._process.start()

    def wait_ready(self) -> None:
        """Block until the emulator serves; on failure stop it and raise with its log tail."""
        if self._process is None:
            raise RuntimeError(f"launch() the {self.name} first")
        try:
            wait_until_ready(self._process, self.ready, self._startup_timeout, self.waiting_for)
        except BaseException:
            self.stop()
            raise
        log.info(self.ready_event, host=self.host)

    def stop(self) -> None:
        """Idempotent."""
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._work_dir is not None:
            self._work_dir.cleanup()
            self._work_dir = None
