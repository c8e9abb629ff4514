"""Pydantic models of the pipeline YAML. Unknown keys are errors."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

SNAKE_ID = r"^[a-z][a-z0-9_]{0,62}$"
PS_TYPE = r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepConfig(_Strict):
    step_id: str = Field(pattern=SNAKE_ID)
    ps_type: str = Field(pattern=PS_TYPE)
    description: str = ""
    # One step id or a list of them (the YAML takes both; the exported JSON Schema says so).
    depends_on: Annotated[list[str], WithJsonSchema({"anyOf": [
        {"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]})] = Field(
        default_factory=list)
    timeout_minutes: float = Field(default=10, gt=0, le=24 * 60)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("depends_on", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @property
    def timeout_seconds(self) -> float:
        return self.timeout_minutes * 60


class Schedule(_Strict):
    type: Literal["daily", "monthly", "hourly"]
    time: str = "02:00"
    timezone: str = "UTC"
    day_of_month: int = Field(default=1, ge=1, le=28)
    # Default run parameters for scheduled runs; may use the slot placeholders of publisher.schedule
    # ({slot_date}, {yesterday}, {month_start}, {previous_month_start}, ...).
    parameters: dict[str, str] = Field(default_factory=dict)

    @field_validator("time")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        match = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", value)
        if not match:
            raise ValueError("time must be HH:MM (24h)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}") from None
        return value


class Execution(_Strict):
    run_once: bool = False
    force_param: str | None = None  # a run parameter that, set truthy, runs a run_once pipeline again

    def forced(self, parameters: Any) -> bool:
        """The request sets `force_param` truthy: true, 1, yes or on (any case), or JSON true / non-zero."""
        value = parameters.get(self.force_param) if self.force_param is not None else None
        if isinstance(value, bool | int | float):
            return bool(value)
        return isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on")


class PipelineConfig(_Strict):
    # May use {org_slug}, e.g. `{org_slug}-{provider}-{domain}`; see run_pipeline_id().
    pipeline_id: str = Field(pattern=r"^[a-z0-9{][a-z0-9_\-{}]{1,127}$")
    name: str
    description: str = ""
    version: str = "1.0"
    timeout_minutes: float = Field(default=30, gt=0, le=24 * 60)
    variables: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepConfig] = Field(min_length=1)
    schedule: Schedule | None = None
    execution: Execution = Field(default_factory=Execution)
    requires_auth: bool = True
    auth_type: Literal["org_api_key", "admin_key"] = "org_api_key"
    # Credential provider the org must have (org_integration_credentials.provider), e.g. OPENAI.
    integration: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]{1,49}$")
    tags: list[str] = Field(default_factory=list)
    category: str | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    @property
    def timeout_seconds(self) -> float:
        return self.timeout_minutes * 60

    def run_pipeline_id(self, org_slug: str) -> str:
        return self.pipeline_id.replace("{org_slug}", org_slug)

    def step(self, step_id: str) -> StepConfig:
        for step in self.steps:
            if step.step_id == step_id:
                return step
        raise KeyError(step_id)
