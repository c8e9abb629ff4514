"""bqemulator (BigQuery REST API over DuckDB) run as a child process on a loopback port."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import structlog
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from convergence.devstack.ports import LOOPBACK, free_port
from convergence.devstack.process import ManagedProcess, wait_until_ready
from convergence.devstack.workdir import WorkDir

log = structlog.get_logger(__name__)

# The directory holding the devstack package, so `python -m convergence.devstack...` resolves
# in the child whatever its working directory.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])


def anonymous_bigquery_client(endpoint: str, project: str) -> bigquery.Client:
    """A real BigQuery client that talks to the emulator at ``endpoint`` without credentials."""
    return bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": endpoint},
    )


class BigQueryEmulator:
    """Starts and stops one bqemulator through ``devstack.bqemulator_launcher``.

    The emulator accepts any project id without creating it first; ``project`` is
    only its default. Data lives in memory unless ``data_dir`` is given.
    """

    def __init__(
        self,
        port: int | None = None,
        project: str = "convergence-local",
        data_dir: Path | None = None,
        work_dir: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.project = project
        self._data_dir = data_dir
        self._work_dir_arg = work_dir
        self._startup_timeout = startup_timeout
        self._work_dir: WorkDir | None = None
        self._process: ManagedProcess | None = None

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"

    def client(self, project: str | None = None) -> bigquery.Client:
        return anonymous_bigquery_client(self.endpoint, project or self.project)

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process without waiting, so another emulator can boot meanwhile."""
        self._work_dir = WorkDir("convergence-bigquery-", self._work_dir_arg)
        argv = [
            sys.executable,
            "-m",
            "convergence.devstack.bqemulator_launcher",
            f"--port={self.port}",
            f"--project={self.project}",
            f"--work-dir={self._work_dir.path}",
        ]
        if self._data_dir is not None:
            argv.append(f"--data-dir={self._data_dir}")
        log_path = self._work_dir.path / "bigquery-emulator.log"
        self._process = ManagedProcess("BigQuery emulator", argv, log_path, _child_env())
        self._process.start()

    def wait_ready(self) -> None:
        """Block until the REST API answers; on failure stop it and raise with its log tail."""
        if self._process is None:
            raise RuntimeError("launch() the BigQuery emulator first")
        try:
            wait_until_ready(self._process, self._api_answers, self._startup_timeout, "its REST API to answer")
        except BaseException:
            self.stop()
            raise
        log.info("bigquery_emulator.ready", endpoint=self.endpoint)

    def stop(self) -> None:
        """Idempotent."""
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._work_dir is not None:
            self._work_dir.cleanup()
            self._work_dir = None

    def _api_answers(self) -> bool:
        url = f"{self.endpoint}/bigquery/v2/projects/{self.project}/datasets"
        try:
            with _DIRECT.open(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False


# Loopback must not go through an HTTP(S)_PROXY from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE_ROOT, env.get("PYTHONPATH")) if p)
    # A stray BQEMU_* variable would change the settings the launcher leaves at defaults.
    for name in [n for n in env if n.startswith("BQEMU_")]:
        del env[name]
    return env
