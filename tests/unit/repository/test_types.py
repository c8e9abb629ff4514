"""mypy over the typed packages (the pipeline core, the consumer, the services wiring and the adapters and
front ends around them), in `make test`. Not yet typed: processors, devstack, observability, the CLI entry.

mypy does not read setuptools' package-dir mapping (consumer/ installs as convergence.consumer), so the
check runs on a view of the package as it is installed: a folder of symlinks, built here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT

TYPED = ("convergence.pipeline", "convergence.consumer", "convergence.runtime", "convergence.publisher",
         "convergence.schemas", "convergence.warehouse", "convergence.tenancy", "convergence.notifications",
         "convergence.api", "convergence.console", "convergence.commands", "convergence.extractors",
         "convergence.httpclient", "convergence.kms", "convergence.settings", "convergence.infra")
MAPPED = ("consumer", "publisher", "processors", "schemas", "configs")


def installed_view(root: Path) -> Path:
    package = root / "convergence"
    package.mkdir(parents=True)
    for entry in (REPO_ROOT / "convergence").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name in MAPPED:
        (package / name).symlink_to(REPO_ROOT / name)
    return root


@pytest.mark.slow
def test_the_typed_packages_pass_mypy(tmp_path: Path) -> None:
    if shutil.which("mypy", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("mypy is not installed: `make test` installs the dev extra, which pins it")
    view = installed_view(tmp_path / "view")
    args = [sys.executable, "-m", "mypy", *(f"-p={p}" for p in TYPED), "--ignore-missing-imports",
            "--follow-imports=silent", "--no-incremental", f"--python-executable={sys.executable}"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "MYPYPATH": str(view)})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
