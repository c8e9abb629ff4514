"""The extraction engine shared by the usage and billed-cost steps of both providers.

Each report request is paged through; a page is validated and turned into rows as a whole, then handed
to one streaming warehouse write (StreamingWrite: staged batches, one atomic range_replace at the end).
A transient failure (429/5xx after the retries, network) or a failure before any row abandons the write:
the table stays as it was and Pub/Sub redelivers. A malformed page (or another permanent error) after
valid pages commits the rows of those earlier pages, and the error says how many were kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog

from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import StepError
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.processors._llm.bq import identifier
from convergence.processors._llm.client import MalformedPage, http_client, provider_secret, report_pages
from convergence.processors._llm.params import DateRange, date_range
from convergence.processors._llm.sink import StreamingWrite
from convergence.processors._llm.values import BadValue

log = structlog.get_logger(__name__)


@dataclass
class ReportRequest:
    url: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    kind: str  # e.g. "completions", "embeddings", "costs": passed back to page_rows
    meta: dict[str, Any] = field(default_factory=dict)  # per-run facts (engines are shared between runs)


@dataclass
class Stats:
    pages: int = 0
    rows: int = 0
    models: set[str] = field(default_factory=set)
    totals: dict[str, int] = field(default_factory=dict)
    skipped_buckets: int = 0
    amounts: dict[str, Decimal] = field(default_factory=dict)

    def add(self, name: str, value: int | None) -> None:
        if value:
            self.totals[name] = self.totals.get(name, 0) + value

    def add_amount(self, name: str, value: Decimal) -> None:
        self.amounts[name] = self.amounts.get(name, Decimal(0)) + value


class Extraction:
    provider: str = ""              # HTTP client label and messages, e.g. "openai"
    credential_provider: str = ""   # org_integration_credentials.provider, e.g. "OPENAI"
    default_table: str = ""
    default_schema_file: str = ""
    date_column: str = ""

    # -- provider specifics -----------------------------------------------------------------------------
    def base_url(self, context: RunContext, config: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def requests(self, base_url: str, secret: str, config: Mapping[str, Any], dates: DateRange) -> list[ReportRequest]:
        raise NotImplementedError

    def page_rows(self, body: dict[str, Any], request: ReportRequest, dates: DateRange, context: RunContext,
                  stats: Stats) -> Iterator[dict[str, Any]]:
        """Rows of one page; raise BadValue for anything malformed."""
        raise NotImplementedError

    def summary(self, stats: Stats) -> dict[str, Any]:
        return dict(stats.totals)

    # -- the engine ---------------------------------------------------------------------------------------
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        dates = date_range(config, context.parameters)
        services = context.services
        destination = config.get("destination") or {}
        table = identifier(destination.get("table", self.default_table))
        secret = await provider_secret(config, context, self.credential_provider)
        http = http_client(context, self.provider, config)
        sink = StreamingWrite(services, org_slug=context.org_slug, dataset=services.org_dataset(context.org_slug),
                              table=table, schema_path=str(destination.get("schema_file", self.default_schema_file)),
                              date_column=self.date_column, date_range=dates,
                              partitioning=destination.get("partitioning", self.date_column),
                              clustering=destination.get("clustering", ["model"]))
        stats = Stats()
        # The base URL is a setting, never step config: the admin key only goes to the configured provider.
        base = str(self.base_url(context, config)).rstrip("/")
        try:
            for request in self.requests(base, secret, config, dates):
                pages = report_pages(http, request.url, request.params, request.headers, self.provider)
                async with aclosing(pages):
                    async for page in pages:
                        try:
                            rows = list(self.page_rows(page.body, request, dates, context, stats))
                        except (BadValue, KeyError, TypeError, AttributeError) as error:
                            detail = str(error) if isinstance(error, BadValue) else f"{type(error).__name__}: {error}"
                            raise MalformedPage(
                                f"{self.provider}: malformed {request.kind} page {page.number}: {detail}") from None
                        stats.pages += 1
                        await sink.add_page(rows)
                        stats.rows += len(rows)
        except StepError as error:
            if not sink.handed or error.retryable:
                await sink.abort()  # nothing usable, or a retry will redo it all: the table stays as it was
                raise
            kept = await self._keep_earlier_pages(sink)
            log.warning("extraction stopped; rows of the earlier pages kept", provider=self.provider,
                        code=error.code, rows_kept=kept, pages=stats.pages)
            raise type(error)(f"{error} ({kept} rows from {stats.pages} earlier pages were loaded into {table} "
                              "and kept)", code=error.code, **{**error.details, "rows_loaded": kept}) from None
        except BaseException:
            await sink.abort()
            raise
        written = await sink.commit()
        calls = getattr(http, "calls", stats.pages)
        return {
            "status": "SUCCESS",
            "rows_processed": written,
            **dates.as_result(),
            "table": table,
            "pages": stats.pages,
            "api_calls": calls,
            "retried_calls": max(0, calls - stats.pages),
            "batches": sink.batches,
            "models": len(stats.models),
            "skipped_buckets": stats.skipped_buckets,
            **self.summary(stats),
        }

    async def _keep_earlier_pages(self, sink: StreamingWrite) -> int:
        try:
            return await sink.commit()
        except Exception:  # noqa: BLE001 - the provider's error is the one to report
            log.exception("could not write the rows of the earlier pages", table=sink.table)
            return 0


def require_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadValue(f"{what} is {type(value).__name__}, not a list")
    return value


def require_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadValue(f"{what} is {type(value).__name__}, not an object")
    return value
