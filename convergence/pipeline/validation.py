"""`convergence validate`: every pipeline under configs/ loads, forms a DAG, resolves its processors
and references only files that exist. All problems are collected, none stops the scan."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from convergence.pipeline.context import PlaceholderError, resolve_placeholders
from convergence.pipeline.errors import ConfigError, ConfigProblem
from convergence.pipeline.loader import NON_PIPELINE_FILES, PipelineLoader
from convergence.pipeline.models import PipelineConfig
from convergence.pipeline.registry import ProcessorRegistry

_FILE_KEY_SUFFIXES = ("_file", "_dir")


def pipeline_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.yml")):
        if path.name not in NON_PIPELINE_FILES:
            yield path


def data_files(root: Path) -> Iterator[Path]:
    for path in sorted(list(root.rglob("*.yml")) + list(root.rglob("*.yaml"))):
        if path.name in NON_PIPELINE_FILES or path.suffix == ".yaml":
            yield path


def _file_references(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _file_references(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _file_references(v, f"{key}.{i}")
    elif isinstance(value, str) and key.rsplit(".", 1)[-1].endswith(_FILE_KEY_SUFFIXES):
        yield key, value


def reference_problems(config: PipelineConfig, base_dir: Path, file: str) -> list[ConfigProblem]:
    """Files named in step configs (keys ending in _file or _dir) must exist under base_dir."""
    problems: list[ConfigProblem] = []
    names = {"org_slug": "org", "run_id": "run", "pipeline_id": config.pipeline_id, **config.variables}
    for index, step in enumerate(config.steps):
        for key, raw in _file_references(step.config):
            try:
                resolved = resolve_placeholders(raw, names)
            except PlaceholderError:
                continue  # depends on run parameters: checked when the run starts
            target = (base_dir / str(resolved)).resolve()
            if not target.is_relative_to(base_dir.resolve()):
                problems.append(
                    ConfigProblem(f"{raw!r} points outside the project", f"steps.{index}.config.{key}", file)
                )
            elif not target.exists():
                problems.append(ConfigProblem(f"file not found: {resolved}", f"steps.{index}.config.{key}", file))
    return problems


def validate_tree(configs_dir: Path, registry: ProcessorRegistry | None = None) -> tuple[int, list[ConfigProblem]]:
    """Validate every pipeline under configs_dir. Returns (pipelines checked, problems)."""
    registry = registry or ProcessorRegistry()
    loader = PipelineLoader(configs_dir)
    base_dir = loader.configs_dir.parent
    problems: list[ConfigProblem] = []
    count = 0
    for path in pipeline_files(loader.configs_dir):
        count += 1
        display = str(Path("configs") / path.relative_to(loader.configs_dir))
        try:
            config = loader.load_file(path)
        except ConfigError as error:
            problems.extend(error.problems)
            continue
        for index, step in enumerate(config.steps):
            if not registry.exists(step.ps_type):
                problems.append(ConfigProblem(f"unknown ps_type {step.ps_type!r}", f"steps.{index}.ps_type", display))
        problems.extend(reference_problems(config, base_dir, display))
    for path in data_files(loader.configs_dir):
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            problems.append(ConfigProblem(f"invalid YAML: {error}", file=str(path)))
    return count, problems


def deprecation_notes(configs_dir: Path) -> list[ConfigProblem]:
    """Step config keys that still work but have a newer spelling (the retry/rate-limit shape)."""
    from convergence.extractors.retry import deprecated_keys

    loader = PipelineLoader(configs_dir)
    notes: list[ConfigProblem] = []
    for path in pipeline_files(loader.configs_dir):
        display = str(Path("configs") / path.relative_to(loader.configs_dir))
        try:
            config = loader.load_file(path)
        except ConfigError:
            continue  # reported by validate_tree
        for index, step in enumerate(config.steps):
            notes += [ConfigProblem(text, f"steps.{index}.config", display) for text in deprecated_keys(step.config)]
    return notes
