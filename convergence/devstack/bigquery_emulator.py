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

from convergence.devstack.process import EmulatorProcess

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


class BigQueryEmulator(EmulatorProcess):
    """Starts and stops one bqemulator through ``convergence.devstack.bqemulator_launcher``.

    The emulator accepts any project id without creating it first; ``project`` is
    only its default. Data lives in memory unless ``data_dir`` is given.
    """

    name = "BigQuery emulator"
    work_prefix = "convergence-bigquery-"
    log_name = "bigquery-emulator.log"
    ready_event = "bigquery_emulator.ready"
    waiting_for = "its REST API to answer"

    def __init__(
        self,
        port: int | None = None,
        project: str = "convergence-local",
        data_dir: Path | None = None,
        work_dir: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(port, project, work_dir, startup_timeout)
        self._data_dir = data_dir

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"

    def client(self, project: str | None = None) -> bigquery.Client:
        return anonymous_bigquery_client(self.endpoint, project or self.project)

    def argv(self, work_dir: Path) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "convergence.devstack.bqemulator_launcher",
            f"--port={self.port}",
            f"--project={self.project}",
            f"--work-dir={work_dir}",
        ]
        if self._data_dir is not None:
            argv.append(f"--data-dir={self._data_dir}")
        return argv

    def env(self) -> dict[str, str]:
        return _child_env()

    def ready(self) -> bool:
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
