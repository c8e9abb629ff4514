"""demo.rows: writes `count` deterministic rows for one day into a table of the org's dataset.

Idempotent (MERGE on the row's key), so a redelivered run leaves one copy of every row, and the parallel
steps of the demo pipeline writing the same table never delete each other's rows.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, PermanentStepError
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput


def synthetic_rows(org_slug: str, source: str, day: date, count: int) -> Iterator[dict]:
    for index in range(count):
        digest = hashlib.sha256(f"{org_slug}:{source}:{day}:{index}".encode()).digest()
        yield {
            "org_slug": org_slug,
            "usage_date": day.isoformat(),
            "source": source,
            "item": f"item_{index:05d}",
            "quantity": int.from_bytes(digest[:2], "big") % 1000,
        }


class Rows:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        try:
            day = date.fromisoformat(str(config.get("date") or context.parameters.get("date")))
            count = int(config.get("count", 10))
        except (TypeError, ValueError) as error:
            raise PermanentStepError(f"demo.rows needs an ISO `date` and an integer `count`: {error}",
                                     code=ErrorCode.INVALID_PARAMETERS) from None
        services = context.services
        dataset = services.org_dataset(context.org_slug)
        schema_path = Path(services.settings.configs_dir).parent / config["schema_file"]
        rows = synthetic_rows(context.org_slug, config.get("source", step.step_id), day, count)
        result = await asyncio.to_thread(
            services.writer.write, dataset, config["table"], rows, mode="merge", org_slug=context.org_slug,
            key_columns=["org_slug", "usage_date", "source", "item"], schema_path=schema_path,
        )
        return {"status": "SUCCESS", "rows_processed": result.rows_written, "table": config["table"]}


def get_engine() -> Rows:
    return Rows()
