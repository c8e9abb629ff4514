"""ps_type `a.b` -> module `processors/a/b.py` -> `get_engine()`."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ConfigError, ErrorCode
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput

_PS_TYPE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


@runtime_checkable
class Processor(Protocol):
    """What a processor's engine offers: `execute` returns the step's output (results.StepOutput)."""

    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput: ...


def _find(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False


class UnknownProcessor(ConfigError):
    code = ErrorCode.UNKNOWN_PROCESSOR


class ProcessorRegistry:
    def __init__(self, package: str | Sequence[str] = "convergence.processors"):
        # Packages searched in order: `processors` first, then any plugin packages from settings.
        self.packages = (package,) if isinstance(package, str) else tuple(package)
        self._engines: dict[str, Processor] = {}
        self._lock = threading.Lock()

    def module_name(self, ps_type: str) -> str:
        """The module a ps_type resolves to: the first package that has it (or the first package)."""
        if not _PS_TYPE.match(ps_type):
            raise UnknownProcessor(f"ps_type {ps_type!r} must look like 'provider.domain' (lowercase)")
        provider, domain = ps_type.split(".")
        candidates = [f"{package}.{provider}.{domain}" for package in self.packages]
        return next((name for name in candidates if _find(name)), candidates[0])

    def exists(self, ps_type: str) -> bool:
        try:
            return _find(self.module_name(ps_type))
        except UnknownProcessor:
            return False

    def resolve(self, ps_type: str) -> Processor:
        with self._lock:
            engine = self._engines.get(ps_type)
        if engine is not None:
            return engine
        name = self.module_name(ps_type)
        if not self.exists(ps_type):
            raise UnknownProcessor(f"unknown ps_type {ps_type!r}: no module {name.replace('.', '/')}.py")
        module = importlib.import_module(name)
        factory = getattr(module, "get_engine", None)
        if factory is None:
            raise UnknownProcessor(f"processor module {name} has no get_engine()")
        engine = factory()
        if not inspect.iscoroutinefunction(getattr(engine, "execute", None)):
            raise UnknownProcessor(f"{name}.get_engine() must return an object with `async def execute(step, context)`")
        with self._lock:
            self._engines[ps_type] = engine
        return engine
