"""pytest plugin: every statement the suite sends to BigQuery must pass Google's SQL front end.

At start-up it turns recording on for this process and for every Python process the tests start (the
`autoload` folder goes first on PYTHONPATH). At the end of the session it analyzes each distinct statement
once and fails the run on any refusal, naming the statement, the analyzer's message and the test.
`--no-googlesql` skips the analysis for quick local iterations; CI never passes it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gcp_conformance import recorder

AUTOLOAD = Path(__file__).parent / "autoload"
REPO = Path(__file__).resolve().parents[2]
STRICT_LIMITS_ENV = "CONVERGENCE_BQ_STRICT_LIMITS"


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--no-googlesql", action="store_true",
                     help="do not analyze the recorded BigQuery statements with Google's SQL front end")


def pytest_configure(config: Any) -> None:
    record_dir = Path(tempfile.mkdtemp(prefix="convergence-bq-record-"))
    config._bq_record_dir = record_dir
    os.environ[recorder.RECORD_DIR_ENV] = str(record_dir)
    os.environ[STRICT_LIMITS_ENV] = "1"
    paths = [str(AUTOLOAD), str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    recorder.install_on_import()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: Any, nextitem: Any) -> Iterator[None]:
    os.environ[recorder.CURRENT_TEST_ENV] = item.nodeid
    yield
    os.environ[recorder.CURRENT_TEST_ENV] = "<between tests>"


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    config = session.config
    record_dir: Path = config._bq_record_dir
    try:
        if config.getoption("--no-googlesql") or not any(record_dir.glob("*.jsonl")):
            return
        from tests.gcp_conformance.analysis import analyze, read_records

        reporter = config.pluginmanager.get_plugin("terminalreporter")
        write = reporter.write_line if reporter else print
        violations = [r for r in read_records(record_dir) if r["kind"] == "limit_violation"]
        if violations:
            write(f"BigQuery limits: {len(violations)} calls real BigQuery would refuse:")
            for v in violations:
                write(f"- sent by {v['test']}: {v['limit']} ({v['number']}): {v['detail']}")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        count, findings = analyze(record_dir)
        write(f"GoogleSQL: {count} distinct statements analyzed with Google's SQL front end, "
              f"{len(findings)} refused")
        if findings:
            write("GoogleSQL refused these statements (BigQuery would refuse them too):")
            for finding in findings:
                write(finding.describe())
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    finally:
        if os.environ.get("CONVERGENCE_KEEP_BQ_RECORD") != "1":
            shutil.rmtree(record_dir, ignore_errors=True)
