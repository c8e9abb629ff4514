"""The pipeline core has no cloud imports: it can be read, imported and tested alone."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.paths import REPO_ROOT

PROBE = r"""
import importlib, json, pkgutil, sys
import convergence.pipeline as core
for info in pkgutil.iter_modules(core.__path__, "convergence.pipeline."):
    importlib.import_module(info.name)
print(json.dumps(sorted(name for name in sys.modules if name.startswith(("google", "grpc", "aiohttp")))))
"""


def test_importing_every_core_module_loads_no_cloud_or_http_client():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
