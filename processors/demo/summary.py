"""demo.summary: counts the rows of a table for the org and day (a parameterized query)."""

from __future__ import annotations

import asyncio

from google.cloud import bigquery

from convergence.warehouse.identifiers import table_ref


class Summary:
    async def execute(self, step, context):
        config = context.resolve(step.config)
        services = context.services
        table = table_ref(services.settings.gcp_project_id, services.org_dataset(context.org_slug), config["table"])
        query = (f"SELECT source, COUNT(*) AS row_count, SUM(quantity) AS quantity FROM {table} "  # noqa: S608
                 "WHERE org_slug = @org_slug AND usage_date = @day GROUP BY source ORDER BY source")
        job_config = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter("org_slug", "STRING", context.org_slug),
            bigquery.ScalarQueryParameter("day", "DATE", config["date"]),
        ])

        def run() -> list[dict]:
            return [dict(row.items()) for row in services.bigquery.query(query, job_config=job_config).result()]

        rows = await asyncio.to_thread(run)
        total = sum(int(r["row_count"]) for r in rows)
        return {"status": "SUCCESS", "rows_processed": 0, "sources": len(rows), "total_rows": total,
                "total_quantity": sum(int(r["quantity"] or 0) for r in rows)}


def get_engine() -> Summary:
    return Summary()
