"""Google's Pub/Sub emulator (Java) run as a child process on a loopback port."""

from __future__ import annotations

import shutil
from pathlib import Path

import structlog

from convergence.devstack.errors import EmulatorNotInstalledError
from convergence.devstack.ports import LOOPBACK
from convergence.devstack.process import EmulatorProcess

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


class PubSubEmulator(EmulatorProcess):
    """Starts and stops one Pub/Sub emulator; ``host`` is what PUBSUB_EMULATOR_HOST takes."""

    name = "Pub/Sub emulator"
    work_prefix = "convergence-pubsub-"
    log_name = "pubsub-emulator.log"
    ready_event = "pubsub_emulator.ready"
    waiting_for = repr(READY_LINE)

    def __init__(
        self,
        port: int | None = None,
        project: str = "convergence-local",  # the emulator accepts any project id; gcloud wants one
        work_dir: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(port, project, work_dir, startup_timeout)

    def argv(self, work_dir: Path) -> list[str]:
        return emulator_command(self.port, self.project, work_dir / "data")

    def ready(self) -> bool:
        return self._process is not None and READY_LINE in self._process.log_text()
