"""Google's Pub/Sub emulator (Java) run as a child process on a loopback port."""

from __future__ import annotations

import shutil
from pathlib import Path

import structlog

from convergence.devstack.errors import EmulatorNotInstalledError
from convergence.devstack.ports import LOOPBACK, free_port
from convergence.devstack.process import ManagedProcess, wait_until_ready
from convergence.devstack.workdir import WorkDir

log = structlog.get_logger(__name__)

EMULATOR_BINARY = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
READY_LINE = "Server started, listening on"
INSTALL_HINT = (
    "The Pub/Sub emulator is not installed. Install the Debian/apt package "
    "'google-cloud-cli-pubsub-emulator' (from Google's Cloud SDK apt repository) or run "
    "'gcloud components install pubsub-emulator'. It needs Java 17 or newer on PATH."
)


def emulator_command(port: int, project: str, data_dir: Path) -> list[str]:
    """The command that starts the emulator: its own launcher, else gcloud's wrapper."""
    if EMULATOR_BINARY.exists():
        return [str(EMULATOR_BINARY), f"--host={LOOPBACK}", f"--port={port}"]
    gcloud = shutil.which("gcloud")
    if gcloud is not None:
        return [
            gcloud, "beta", "emulators", "pubsub", "start",
            f"--host-port={LOOPBACK}:{port}", f"--project={project}", f"--data-dir={data_dir}",
        ]  # fmt: skip
    raise EmulatorNotInstalledError(INSTALL_HINT)


class PubSubEmulator:
    """Starts and stops one Pub/Sub emulator; ``host`` is what PUBSUB_EMULATOR_HOST takes."""

    def __init__(
        self,
        port: int | None = None,
        project: str = "convergence-local",
        work_dir: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.project = project  # the emulator accepts any project id; gcloud wants one
        self._work_dir_arg = work_dir
        self._startup_timeout = startup_timeout
        self._work_dir: WorkDir | None = None
        self._process: ManagedProcess | None = None

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process without waiting, so another emulator can boot meanwhile."""
        self._work_dir = WorkDir("convergence-pubsub-", self._work_dir_arg)
        argv = emulator_command(self.port, self.project, self._work_dir.path / "data")
        self._process = ManagedProcess("Pub/Sub emulator", argv, self._work_dir.path / "pubsub-emulator.log")
        self._process.start()

    def wait_ready(self) -> None:
        """Block until the emulator serves; on failure stop it and raise with its log tail."""
        if self._process is None:
            raise RuntimeError("launch() the Pub/Sub emulator first")
        try:
            wait_until_ready(self._process, self._log_says_ready, self._startup_timeout, repr(READY_LINE))
        except BaseException:
            self.stop()
            raise
        log.info("pubsub_emulator.ready", host=self.host)

    def stop(self) -> None:
        """Idempotent."""
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._work_dir is not None:
            self._work_dir.cleanup()
            self._work_dir = None

    def _log_says_ready(self) -> bool:
        return self._process is not None and READY_LINE in self._process.log_text()
