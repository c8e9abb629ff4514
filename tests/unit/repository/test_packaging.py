"""One import package: every module loads once, as `convergence.…`, never also under a bare folder name."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.test_docker import setuptools_table, source_dir
from tests.paths import REPO_ROOT

# Run from the repository root, where the bare folders (consumer/, schemas/, ...) are on sys.path.
PROBE = r"""
import importlib, json, pkgutil, sys
import convergence
names, errors = [], {}
for package in sys.argv[1:]:
    module = importlib.import_module(package)
    names.append(package)
    for info in pkgutil.iter_modules(module.__path__, package + "."):
        if not info.ispkg and not info.name.endswith(".__main__"):
            try:
                importlib.import_module(info.name)
                names.append(info.name)
            except Exception as error:  # a module that cannot import alone is a finding too
                errors[info.name] = repr(error)
bare = {}
for name in convergence.MAPPED_PACKAGES:
    try:
        importlib.import_module(name)
        bare[name] = "imported"
    except ImportError as error:
        bare[name] = str(error)
files, ours = {}, {sys.modules[p].__file__.rsplit("/", 1)[0] for p in sys.argv[1:]}
for name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None)
    if path and any(path.startswith(folder) for folder in ours):
        files.setdefault(path, []).append(name)
print(json.dumps({"names": names, "errors": errors, "bare": bare,
                  "twice": {p: n for p, n in files.items() if len(n) > 1}}))
"""


def test_every_module_loads_once_under_its_convergence_name():
    packages = setuptools_table()["packages"]
    result = subprocess.run([sys.executable, "-c", PROBE, *packages], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not report["errors"], report["errors"]
    assert len(report["names"]) > 150  # every module was imported, not only the packages
    assert not report["twice"], report["twice"]
    for name, outcome in report["bare"].items():
        assert outcome.startswith(f"import convergence.{name}, not {name}"), (name, outcome)


def test_the_package_list_names_the_folders_that_hold_them():
    for package in setuptools_table()["packages"]:
        assert (source_dir(package) / "__init__.py").is_file(), package
