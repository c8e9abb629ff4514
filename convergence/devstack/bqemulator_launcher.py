"""Run bqemulator's server in this process, with its DuckDB ``spatial`` step skipped.

bqemulator 1.4.0 runs ``INSTALL spatial`` when its engine starts, which downloads a
DuckDB extension from the internet, so as shipped it cannot start offline. This
project needs no GEOGRAPHY, so the launcher replaces that one engine method with a
no-op before starting the server. The patch is written against one exact version;
importing this module with another version installed fails, so an upgrade is a
deliberate act (re-check ``DuckDBEngine._load_spatial`` and update the pin).

    python -m convergence.devstack.bqemulator_launcher --port 9050 --project convergence-local [--data-dir D]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

PATCHED_BQEMULATOR_VERSION = "1.4.0"


def _check_bqemulator_version() -> None:
    installed = version("bqemulator")
    if installed != PATCHED_BQEMULATOR_VERSION:
        raise ImportError(
            f"convergence.devstack.bqemulator_launcher patches bqemulator {PATCHED_BQEMULATOR_VERSION}, "
            f"but bqemulator {installed} is installed. Install bqemulator=="
            f"{PATCHED_BQEMULATOR_VERSION}, or check that DuckDBEngine._load_spatial in the "
            "new version is still the only step that needs the internet and update the pin."
        )


_check_bqemulator_version()

# Imported after the check so a wrong version fails with the message above.
from bqemulator.config import PersistenceMode, Settings  # noqa: E402
from bqemulator.jobs import executor as jobs_executor  # noqa: E402
from bqemulator.server import run_forever  # noqa: E402
from bqemulator.storage.engine import DuckDBEngine  # noqa: E402
from bqemulator.versioning.snapshots import SnapshotManager  # noqa: E402


def _skip_spatial(self: DuckDBEngine) -> None:
    """Stand-in for ``DuckDBEngine._load_spatial``: GEOGRAPHY is left unsupported."""


def _no_snapshot(self: SnapshotManager, *args: object, **kwargs: object) -> None:
    """Stand-in for ``SnapshotManager.capture``: no time-travel copy of the table after each write."""


def _load_row_count(job: object, ctx: object) -> int:
    """Stand-in for ``executor._refresh_load_row_count`` that reads its one row to the end. The original
    stops at ``fetchone()``, leaving DuckDB's result open, so the next insertAll (``connection.register``)
    failed with "connection has an unfinished result" (a 500 to the client) until some query ran."""
    sql = f"SELECT COUNT(*) FROM {job.target_ref}"  # type: ignore[attr-defined]  # noqa: S608
    rows = ctx.engine.execute(sql).fetchall()  # type: ignore[attr-defined]
    return int(rows[0][0]) if rows else 0


def patch_engine(time_travel: bool = False) -> None:
    DuckDBEngine._load_spatial = _skip_spatial  # type: ignore[method-assign]
    jobs_executor._refresh_load_row_count = _load_row_count  # type: ignore[assignment]
    if not time_travel:
        # The emulator copies the whole table after every write for time travel, which nothing here
        # uses: memory then grows with the square of a table's size (20+ GB for a 1M-row load).
        SnapshotManager.capture = _no_snapshot  # type: ignore[method-assign]


def build_settings(port: int, project: str, data_dir: Path | None) -> Settings:
    return Settings(
        rest_host="127.0.0.1",
        rest_port=port,
        grpc_host="127.0.0.1",
        grpc_port=0,  # any free port: the REST API is what clients use
        default_project_id=project,
        persistence_mode=PersistenceMode.EPHEMERAL if data_dir is None else PersistenceMode.PERSISTENT,
        data_dir=data_dir,
        # Its `INSTALL avro` would try the internet too; only Avro loads need it.
        enable_format_extensions=False,
        upload_staging_dir=None if data_dir is None else data_dir / "uploads",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m convergence.devstack.bqemulator_launcher", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="REST port on 127.0.0.1")
    parser.add_argument("--project", required=True, help="default project id (others work too)")
    parser.add_argument("--data-dir", type=Path, default=None, help="persist to this directory (default: in memory)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="working directory: DuckDB spills its temp files to .tmp here")
    parser.add_argument("--time-travel", action="store_true", help="keep time-travel snapshots (memory-hungry)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.work_dir is not None:
        os.chdir(args.work_dir)  # keeps DuckDB's spill files out of the caller's directory
    patch_engine(time_travel=args.time_travel)
    run_forever(build_settings(args.port, args.project, args.data_dir))  # until SIGTERM/SIGINT


if __name__ == "__main__":
    main()
