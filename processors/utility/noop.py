"""utility.noop: does nothing and succeeds. For smoke tests of a deployment and for benchmarks."""

from __future__ import annotations

from convergence.pipeline.context import RunContext
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput


class Noop:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        return {"status": "SUCCESS", "rows_processed": 0}


def get_engine() -> Noop:
    return Noop()
