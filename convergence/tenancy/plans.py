"""Plans (daily run limits) and billing statuses from configs/setup/plans.yml: never hard-coded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from convergence.settings import Settings

KNOWN_STATUSES = ("ACTIVE", "TRIAL", "SUSPENDED", "CANCELLED")


class PlansConfigError(ValueError):
    """configs/setup/plans.yml is missing or malformed."""


@dataclass(frozen=True)
class Plan:
    name: str
    daily_pipeline_runs: int
    monthly_pipeline_runs: int | None = None
    concurrent_pipelines: int | None = None


@dataclass(frozen=True)
class Plans:
    plans: Mapping[str, Plan]
    billing_status: Mapping[str, str]
    allowed_statuses: frozenset[str]
    trial_days: int = 14

    def plan(self, name: str) -> Plan | None:
        return self.plans.get(str(name).upper())

    def backend_status(self, billing_status: str) -> str:
        """`trialing` -> TRIAL, `past_due` -> SUSPENDED, ... (the table in plans.yml). Unknown statuses are refused."""
        try:
            return self.billing_status[billing_status.lower()]
        except KeyError:
            raise PlansConfigError(f"unknown billing status {billing_status!r}; known: "
                                   f"{sorted(self.billing_status)}") from None


def _positive(value: Any, where: str, required: bool = True) -> int | None:
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PlansConfigError(f"{where} must be a non-negative integer, got {value!r}")
    return value


def parse_plans(raw: Mapping[str, Any], where: str = "plans.yml") -> Plans:
    plans_raw = raw.get("plans")
    if not isinstance(plans_raw, Mapping) or not plans_raw:
        raise PlansConfigError(f"{where}: `plans` must map plan names to limits")
    plans = {}
    for name, limits in plans_raw.items():
        if not isinstance(limits, Mapping):
            raise PlansConfigError(f"{where}: plans.{name} must be a mapping")
        key = str(name).upper()
        daily = _positive(limits.get("daily_pipeline_runs"), f"{where}: plans.{name}.daily_pipeline_runs")
        assert daily is not None
        plans[key] = Plan(
            name=key,
            daily_pipeline_runs=daily,
            monthly_pipeline_runs=_positive(limits.get("monthly_pipeline_runs"), f"plans.{name}.monthly", False),
            concurrent_pipelines=_positive(limits.get("concurrent_pipelines"), f"plans.{name}.concurrent", False),
        )
    mapping = {str(k).lower(): str(v).upper() for k, v in (raw.get("billing_status") or {}).items()}
    allowed = frozenset(str(s).upper() for s in raw.get("allowed_statuses") or ())
    unknown = (set(mapping.values()) | allowed) - set(KNOWN_STATUSES)
    if unknown:
        raise PlansConfigError(f"{where}: unknown backend statuses {sorted(unknown)}; known: {list(KNOWN_STATUSES)}")
    if not allowed:
        raise PlansConfigError(f"{where}: `allowed_statuses` must list the statuses that may run")
    trial_days = _positive(raw.get("trial_days", 14), f"{where}: trial_days")
    return Plans(plans, mapping, allowed, trial_days or 0)


def load_plans(settings: Settings | None = None, path: Path | None = None) -> Plans:
    if path is None:
        if settings is None:
            raise ValueError("load_plans needs settings or a path")
        path = Path(settings.configs_dir) / "setup" / "plans.yml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise PlansConfigError(f"{path}: {error}") from None
    return parse_plans(raw, str(path))
