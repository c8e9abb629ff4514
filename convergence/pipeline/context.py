"""The run context handed to processors, and the `{name}` placeholder resolver they call."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from convergence.pipeline.errors import ErrorCode
from convergence.pipeline.services import RunServices

# `{name}` or `{step_id.field}`; `{{` and `}}` are literal braces.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class PlaceholderError(ValueError):
    """A `{placeholder}` names nothing in the context; never silently resolved to an empty string."""

    code = ErrorCode.UNKNOWN_PLACEHOLDER


@dataclass
class RunContext:
    org_slug: str
    run_id: str
    pipeline_id: str
    parameters: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    trigger: str = "adhoc"
    attempt: int = 1
    trace_id: str | None = None
    # Results of finished steps, by step_id.
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Decrypted credentials put here by a kms_decrypt step; never logged, never in results or events.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    # Stored credentials this run read, by canonical provider: when they were read (a provider's 401 then
    # marks that credential INVALID, not one rotated since).
    credentials_read: dict[str, Any] = field(default_factory=dict, repr=False)
    # Adapters (warehouse, credentials, http...) provided by the runtime; the core never imports them.
    # None in a context built without a runtime (tests of steps that need no adapter).
    services: RunServices | None = field(default=None, repr=False)

    def lookup(self) -> dict[str, Any]:
        """Names a placeholder may use. Parameters override variables (runtime beats defaults); the run's
        identity is applied last, so no parameter or variable can point `{org_slug}` at another org."""
        names: dict[str, Any] = {**self.variables, **self.parameters}
        names.update(org_slug=self.org_slug, run_id=self.run_id, pipeline_id=self.pipeline_id, trigger=self.trigger)
        return names

    def resolve(self, value: Any) -> Any:
        """Resolve placeholders in a string, or recursively in lists and dicts."""
        return resolve_placeholders(value, self.lookup(), self.outputs)


def _lookup_dotted(name: str, names: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any:
    head, _, rest = name.partition(".")
    if not rest:
        if head in names:
            return names[head]
        raise KeyError(name)
    current: Any = outputs[head] if head in outputs else names[head]
    for part in rest.split("."):
        if not isinstance(current, Mapping) or part not in current:
            raise KeyError(name)
        current = current[part]
    return current


def resolve_placeholders(value: Any, names: Mapping[str, Any], outputs: Mapping[str, Any] | None = None) -> Any:
    outputs = outputs or {}
    if isinstance(value, dict):
        return {k: resolve_placeholders(v, names, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_placeholders(v, names, outputs) for v in value]
    if not isinstance(value, str) or "{" not in value and "}" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1).strip()
        if not _NAME.match(name):
            raise PlaceholderError(f"invalid placeholder {token!r} in {value!r}")
        try:
            resolved = _lookup_dotted(name, names, outputs)
        except KeyError:
            known = ", ".join(sorted(names)) or "none"
            raise PlaceholderError(
                f"unknown placeholder {{{name}}} in {value!r}; known names: {known}"
            ) from None
        if resolved is None:
            raise PlaceholderError(f"placeholder {{{name}}} in {value!r} has no value")
        return str(resolved)

    # A value that is exactly one placeholder keeps its type (a number stays a number).
    whole = _PLACEHOLDER.fullmatch(value)
    if whole and whole.group(1) is not None and _NAME.match(whole.group(1).strip()):
        try:
            resolved = _lookup_dotted(whole.group(1).strip(), names, outputs)
        except KeyError:
            resolved = None  # fall through to the error path for a consistent message
        if resolved is not None:
            return resolved
    return _PLACEHOLDER.sub(substitute, value)
