"""Find and load pipeline YAML: `{provider}/{domain}/{pipeline}` -> `configs/{provider}/{domain}/{pipeline}.yml`."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from convergence.pipeline.dag import dag_problems
from convergence.pipeline.errors import ConfigError, ConfigProblem, InvalidPipelineRef, PipelineNotFound
from convergence.pipeline.models import PipelineConfig

_SEGMENT = re.compile(r"^[a-z0-9_]{1,64}$")
# YAML files under configs/ that hold data for the platform rather than a pipeline: never loaded as one.
NON_PIPELINE_FILES = frozenset({"config.yml", "providers.yml", "dataset_types.yml", "plans.yml"})


@dataclass(frozen=True)
class PipelineRef:
    """A pipeline's address. The domain may be empty (`anthropic//usage_cost`)."""

    provider: str
    domain: str
    name: str

    @classmethod
    def parse(cls, text: str) -> PipelineRef:
        if not isinstance(text, str) or len(text) > 200:
            raise InvalidPipelineRef("pipeline path must be a string of at most 200 characters")
        parts = text.split("/")
        if len(parts) != 3:
            raise InvalidPipelineRef(
                f"pipeline path {text!r} must be 'provider/domain/pipeline' (domain may be empty: 'provider//pipeline')"
            )
        provider, domain, name = parts
        for label, segment, required in (("provider", provider, True), ("domain", domain, False),
                                          ("pipeline", name, True)):
            if not segment and not required:
                continue
            if not _SEGMENT.match(segment):
                raise InvalidPipelineRef(
                    f"pipeline path {text!r}: {label} segment {segment!r} must be lowercase [a-z0-9_], 1-64 chars"
                )
        return cls(provider, domain, name)

    def __str__(self) -> str:
        return f"{self.provider}/{self.domain}/{self.name}"

    def relative_path(self) -> Path:
        parts = [self.provider] + ([self.domain] if self.domain else []) + [f"{self.name}.yml"]
        return Path(*parts)


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map each field path in a YAML document to its 1-based line, for error messages."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = path + (key.value,)
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, path + (index,))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def parse_pipeline(text: str, file: str = "<string>") -> PipelineConfig:
    """Parse and validate one pipeline document; every problem is listed with field path and line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError([ConfigProblem(f"invalid YAML: {problem}", file=file, line=line)]) from None
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem("a pipeline config must be a YAML mapping", file=file, line=1)])
    lines = _line_index(text)
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            loc = tuple(item["loc"])
            # The nearest enclosing path that has a line (extra keys report their own line).
            line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
            message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
            problems.append(ConfigProblem(message, ".".join(map(str, loc)), file=file, line=line))
        raise ConfigError(problems) from None
    structural = dag_problems(config.steps)
    if structural:
        raise ConfigError([_with_line(p, file, lines) for p in structural])
    return config


def _with_line(problem: ConfigProblem, file: str, lines: dict[tuple[Any, ...], int]) -> ConfigProblem:
    loc = tuple(int(p) if p.isdigit() else p for p in problem.path.split(".")) if problem.path else ()
    return ConfigProblem(problem.message, problem.path, file=file, line=lines.get(loc))


class PipelineLoader:
    """Loads pipelines from the configs directory; a path can never escape it. Cached by mtime."""

    def __init__(self, configs_dir: Path):
        self.configs_dir = Path(configs_dir).resolve()
        self._cache: dict[Path, tuple[float, PipelineConfig]] = {}
        self._lock = threading.Lock()

    def path_for(self, ref: PipelineRef | str) -> Path:
        ref = PipelineRef.parse(ref) if isinstance(ref, str) else ref
        path = (self.configs_dir / ref.relative_path()).resolve()
        if not path.is_relative_to(self.configs_dir):
            raise InvalidPipelineRef(f"pipeline path {ref} resolves outside the configs directory")
        return path

    def load(self, ref: PipelineRef | str) -> PipelineConfig:
        path = self.path_for(ref)
        if path.name in NON_PIPELINE_FILES:
            raise PipelineNotFound(f"unknown pipeline {ref}: that file holds platform data, not a pipeline")
        if not path.is_file():
            raise PipelineNotFound(f"unknown pipeline {ref}: no file {path.relative_to(self.configs_dir)}")
        return self.load_file(path)

    def load_file(self, path: Path) -> PipelineConfig:
        mtime = path.stat().st_mtime
        with self._lock:
            cached = self._cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        config = parse_pipeline(path.read_text(encoding="utf-8"), file=self._display(path))
        with self._lock:
            self._cache[path] = (mtime, config)
        return config

    def _display(self, path: Path) -> str:
        try:
            return str(Path("configs") / path.relative_to(self.configs_dir))
        except ValueError:
            return str(path)
