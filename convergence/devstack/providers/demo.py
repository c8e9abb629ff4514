"""The LLM part of `make run`: both provider stand-ins serving seeded usage, the pipelines to run for a
demo org, and the cost summary per provider and model to print afterwards.

    async with LlmStandIns() as standins:
        settings = load_settings(**standins.settings_overrides())      # provider base URLs -> stand-ins
        # store standins.credentials[provider] for the demo org (e.g. `convergence dev set-credential`),
        # then run each of DEMO_PIPELINES with demo_parameters() (by message or through the executor)
        print(format_summary(await cost_summary(client, dataset, org, start, end)))
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

from convergence.devstack.providers.anthropic_server import ADMIN_KEY as ANTHROPIC_ADMIN_KEY
from convergence.devstack.providers.anthropic_server import AnthropicStandIn
from convergence.devstack.providers.anthropic_server import generated_usage as anthropic_usage
from convergence.devstack.providers.openai_server import ADMIN_KEY as OPENAI_ADMIN_KEY
from convergence.devstack.providers.openai_server import OpenAIStandIn, generated_completions

DEMO_PIPELINES = ("openai/cost/usage_cost", "openai/cost/cost_extract", "anthropic//usage_cost",
                  "anthropic//cost_extract")
COST_TABLES = {"openai": "openai_cost_daily", "anthropic": "anthropic_cost_daily"}


def demo_parameters(days: int = 3, today: date | None = None) -> dict[str, str]:
    """The last `days` complete UTC days."""
    today = today or datetime.now(UTC).date()
    return {"start_date": (today - timedelta(days=days)).isoformat(),
            "end_date": (today - timedelta(days=1)).isoformat()}


class LlmStandIns:
    def __init__(self, seed: int = 42, models: int = 6):
        self.openai = OpenAIStandIn(completions=generated_completions(seed, models), seed=seed)
        self.anthropic = AnthropicStandIn(usage=anthropic_usage(seed, min(models, 5)))
        self.credentials = {"OPENAI": OPENAI_ADMIN_KEY, "ANTHROPIC": ANTHROPIC_ADMIN_KEY}

    async def __aenter__(self) -> LlmStandIns:
        await self.openai.start()
        await self.anthropic.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.openai.stop()
        await self.anthropic.stop()

    def settings_overrides(self) -> dict[str, str]:
        return {"openai_base_url": self.openai.base_url, "anthropic_base_url": self.anthropic.base_url}


_SUMMARY = """SELECT model, SUM(total_cost) AS cost, SUM(total_tokens) AS tokens, COUNTIF(NOT is_priced) AS unpriced
FROM `{table}` WHERE org_slug = @org AND cost_date BETWEEN @start AND @end GROUP BY model ORDER BY cost DESC"""


async def cost_summary(client: Any, dataset: str, org: str, start: str, end: str) -> list[dict[str, Any]]:
    """Cost per provider and model from the cost tables (a provider without a table is skipped)."""
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    params = [bigquery.ScalarQueryParameter("org", "STRING", org),
              bigquery.ScalarQueryParameter("start", "DATE", date.fromisoformat(start)),
              bigquery.ScalarQueryParameter("end", "DATE", date.fromisoformat(end))]
    out: list[dict[str, Any]] = []
    for provider, table in COST_TABLES.items():
        sql = _SUMMARY.format(table=f"{client.project}.{dataset}.{table}")
        try:
            rows = await asyncio.to_thread(lambda s=sql: list(client.query(
                s, job_config=bigquery.QueryJobConfig(query_parameters=params)).result()))
        except NotFound:
            continue
        out += [{"provider": provider, "model": r["model"], "cost": r["cost"], "tokens": r["tokens"],
                 "unpriced": r["unpriced"]} for r in rows]
    return out


def format_summary(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'provider':<10} {'model':<34} {'tokens':>14} {'cost (USD)':>12}"]
    for provider in COST_TABLES:
        mine = [r for r in rows if r["provider"] == provider]
        for r in mine:
            cost = "unpriced" if r["unpriced"] and r["cost"] is None else f"{r['cost']:.2f}"
            lines.append(f"{provider:<10} {str(r['model']):<34} {int(r['tokens'] or 0):>14,} {cost:>12}")
        if mine:
            total = sum((r["cost"] or 0) for r in mine)
            lines.append(f"{provider:<10} {'total':<34} {'':>14} {total:>12.2f}")
    return "\n".join(lines)
