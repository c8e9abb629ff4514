"""How processors are laid out: a ps_type module (one with get_engine) never imports another ps_type
module; what they share lives in underscore modules (processors/_llm, processors/openai/_api, ...)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.paths import REPO_ROOT

ROOT = REPO_ROOT
# Owned elsewhere for now: still import other ps_type modules.
_NOT_YET = ("processors/focus/",)


def _ps_type_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(ROOT.glob("processors/*/*.py")):
        if path.name.startswith("_") or "def get_engine" not in path.read_text(encoding="utf-8"):
            continue
        modules[f"convergence.processors.{path.parent.name}.{path.stem}"] = path
    return modules


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_ps_type_module_imports_another():
    modules = _ps_type_modules()
    assert len(modules) > 15
    found = []
    for name, path in modules.items():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(_NOT_YET):
            continue
        found += [f"{rel} imports {other}" for other in sorted(_imports(path) & set(modules)) if other != name]
    assert found == []


def test_processors_reach_bigquery_only_through_the_warehouse_facade():
    # processors/focus and generic/_sink are owned elsewhere for now.
    skipped = ("processors/focus/", "processors/generic/_sink.py")
    found = []
    for path in sorted(ROOT.glob("processors/**/*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(skipped):
            continue
        found += [f"{rel} imports {name}" for name in sorted(_imports(path))
                  if name.startswith(("google.cloud.bigquery", "google.api_core"))
                  or name == "google.cloud.bigquery"]
    assert found == []
