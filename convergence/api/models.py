"""Request bodies of the HTTP door. Unknown fields are refused (`extra="forbid"`).

The run body accepts the old API's flat parameters (`{"date": "2025-12-08"}`, `{"start_date": ...,
"end_date": ...}`, `{"month": "2025-12"}`, `{}`) so callers of the old API work unchanged; any other
parameter goes under `parameters`. A name given both ways with different values is refused.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Scalar = str | int | float | bool | None
_DAY = r"^\d{4}-\d{2}-\d{2}$"


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    date: str | None = Field(default=None, pattern=_DAY)
    start_date: str | None = Field(default=None, pattern=_DAY)
    end_date: str | None = Field(default=None, pattern=_DAY)
    month: str | None = Field(default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    parameters: dict[str, Scalar] = Field(default_factory=dict, max_length=32)
    trigger: Literal["adhoc", "backfill"] = "adhoc"

    @field_validator("date", "start_date", "end_date")
    @classmethod
    def _real_day(cls, value: str | None) -> str | None:
        if value is not None:
            date.fromisoformat(value)  # 2025-02-30 is refused
        return value

    def run_parameters(self) -> dict[str, Any]:
        flat = {name: getattr(self, name) for name in ("date", "start_date", "end_date", "month")
                if getattr(self, name) is not None}
        clashes = sorted(name for name in flat if name in self.parameters and self.parameters[name] != flat[name])
        if clashes:
            raise ValueError(f"{', '.join(clashes)} given twice with different values (top level and parameters)")
        return {**self.parameters, **flat}


class SyncBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = False


class EmptyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
