"""demo.summary: counts the rows of a table for the org and day (a parameterized query)."""

from __future__ import annotations

from convergence.pipeline.context import RunContext
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.warehouse.facade import Warehouse
from convergence.warehouse.query import Typed


class Summary:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        services = context.services
        warehouse = Warehouse(services, context.org_slug)
        table = warehouse.ref(config["table"])
        query = (f"SELECT source, COUNT(*) AS row_count, SUM(quantity) AS quantity FROM {table} "  # noqa: S608
                 "WHERE org_slug = @org_slug AND usage_date = @day GROUP BY source ORDER BY source")
        rows, _ = await warehouse.query(query, {"org_slug": context.org_slug, "day": Typed("DATE", config["date"])})
        total = sum(int(r["row_count"]) for r in rows)
        return {"status": "SUCCESS", "rows_processed": 0, "sources": len(rows), "total_rows": total,
                "total_quantity": sum(int(r["quantity"] or 0) for r in rows)}


def get_engine() -> Summary:
    return Summary()
