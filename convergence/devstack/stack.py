"""The local stack: both emulators, started together, and the environment that points at them."""

from __future__ import annotations

import atexit
import os
from types import TracebackType
from typing import Protocol, Self

import structlog
from google.cloud import bigquery

from convergence.devstack.bigquery_emulator import BigQueryEmulator
from convergence.devstack.pubsub_emulator import PubSubEmulator

log = structlog.get_logger(__name__)

DEFAULT_PROJECT_ID = "convergence-local"


class _Emulator(Protocol):
    def launch(self) -> None: ...
    def wait_ready(self) -> None: ...
    def stop(self) -> None: ...


class LocalStack:
    """Pub/Sub and BigQuery emulators on free loopback ports, booting side by side.

    Use as a context manager, or call ``start()``/``stop()``. ``stop()`` is also
    registered with atexit, and the emulators get SIGTERM when the thread that
    started them ends (see ManagedProcess), so a killed run leaves no JVM behind:
    call ``start()`` from a thread that outlives the stack, normally the main one.
    """

    def __init__(self, project: str = DEFAULT_PROJECT_ID, startup_timeout: float = 60.0) -> None:
        self.project = project
        self.pubsub = PubSubEmulator(project=project, startup_timeout=startup_timeout)
        self.bigquery = BigQueryEmulator(project=project, startup_timeout=startup_timeout)
        self._emulators: tuple[_Emulator, ...] = (self.pubsub, self.bigquery)
        self._started = False

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point clients and the service at this stack."""
        return {
            "PUBSUB_EMULATOR_HOST": self.pubsub.host,
            "BIGQUERY_EMULATOR_HOST": self.bigquery.host,
            "GCP_PROJECT_ID": self.project,
        }

    def apply_env(self) -> None:
        os.environ.update(self.env)

    def bigquery_client(self, project: str | None = None) -> bigquery.Client:
        """A real BigQuery client on the emulator, for ``project`` (any id works)."""
        return self.bigquery.client(project or self.project)

    def start(self) -> Self:
        """Start both emulators and wait until both serve (about the time of the slower one)."""
        atexit.register(self.stop)
        self._started = True  # from here stop() must run, even if a start fails or is interrupted
        try:
            # Both boot at once: launch both, then wait for each. Launching from
            # this thread also ties the children's lifetime to it (see ManagedProcess).
            for emulator in self._emulators:
                emulator.launch()
            for emulator in self._emulators:
                emulator.wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("local_stack.ready", **self.env)
        return self

    def stop(self) -> None:
        """Stop both emulators. Idempotent."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        for emulator in self._emulators:
            emulator.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
