"""How processors are laid out: a ps_type module (one with get_engine) never imports another ps_type
module; what they share lives in underscore modules (processors/_llm, processors/openai/_api, ...)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.paths import REPO_ROOT

ROOT = REPO_ROOT


def _ps_type_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(ROOT.glob("processors/*/*.py")):
        if path.name.startswith("_") or "def get_engine" not in path.read_text(encoding="utf-8"):
            continue
        modules[f"convergence.processors.{path.parent.name}.{path.stem}"] = path
    return modules


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(("convergence", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module (and module.name) the file imports, relative imports resolved against its package."""
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_import_parsing_sees_absolute_relative_and_nested_imports(tmp_path):
    module = tmp_path / "processors" / "focus" / "saas.py"
    module.parent.mkdir(parents=True)
    module.write_text("from .conformance import RULES\nfrom .. import openai\n"
                      "def get_engine():\n    import convergence.processors.gcp.bq_etl\n")
    assert {"convergence.processors.focus.conformance", "convergence.processors.openai",
            "convergence.processors.gcp.bq_etl"} <= _imports(module, tmp_path)


def test_no_ps_type_module_imports_another():
    modules = _ps_type_modules()
    assert len(modules) > 15
    assert "convergence.processors.focus.conformance" in modules
    found = []
    for name, path in modules.items():
        rel = path.relative_to(ROOT).as_posix()
        found += [f"{rel} imports {other}" for other in sorted(_imports(path) & set(modules)) if other != name]
    assert found == []


def test_toolkit_modules_import_no_ps_type_module():
    # Otherwise a ps_type module would reach another through the toolkit.
    modules = _ps_type_modules()
    found = []
    for path in sorted(ROOT.glob("processors/**/*.py")):
        if _module_name(path) in modules:
            continue
        rel = path.relative_to(ROOT).as_posix()
        found += [f"{rel} imports {other}" for other in sorted(_imports(path) & set(modules))]
    assert found == []


def test_processors_reach_bigquery_only_through_the_warehouse_facade():
    found = []
    for path in sorted(ROOT.glob("processors/**/*.py")):
        rel = path.relative_to(ROOT).as_posix()
        found += [f"{rel} imports {name}" for name in sorted(_imports(path))
                  if name.startswith(("google.cloud.bigquery", "google.api_core"))
                  or name == "google.cloud.bigquery"]
    assert found == []
