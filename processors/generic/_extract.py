"""The extraction loop shared by `generic.api_extractor` and `gcp.api_extractor`: the destination sink
from a step's config, then pages -> rows -> batches -> one write to the warehouse, with partial progress
kept and reported when a page fails."""

from __future__ import annotations

import time
from typing import Any

import structlog

from convergence.extractors.auth import Auth
from convergence.extractors.batching import BatchBuffer
from convergence.extractors.paginators import Paginator
from convergence.extractors.request import PageRequest
from convergence.extractors.source import PageFetchError, iter_pages
from convergence.httpclient import RetryPolicy
from convergence.pipeline.context import RunContext
from convergence.pipeline.models import StepConfig
from convergence.pipeline.services import RunServices
from convergence.processors._dates import run_dates
from convergence.processors.generic._common import int_option, invalid, resolve_file, write_mode
from convergence.processors.generic._sink import TableSink

log = structlog.get_logger(__name__)

# Without retry config a generic extractor retries 5 times (the old rate_limit.max_retries default).
DEFAULT_RETRY = RetryPolicy(attempts=6)


def build_sink(services: RunServices, context: RunContext, step: StepConfig, destination: dict[str, Any],
               source_url: str, config: dict[str, Any]) -> TableSink:
    table = destination.get("table")
    if not table:
        raise invalid("destination.table is required")
    schema_file = destination.get("schema_file")
    mode = write_mode(destination.get("write_mode"), "append")
    date_range = None
    if mode == "range_replace":
        date_range = run_dates(config, context.parameters)
    key_columns = destination.get("key_columns") or []
    key_fields = destination.get("key_fields") or []
    if not isinstance(key_columns, list) or not isinstance(key_fields, list):
        raise invalid("destination.key_columns and destination.key_fields must be lists")
    field_map = destination.get("field_map") or {}
    if not isinstance(field_map, dict):
        raise invalid("destination.field_map must be a mapping of column -> record path")
    return TableSink(
        services, context, step.step_id, table=str(table),
        schema_file=resolve_file(services, schema_file, "destination.schema_file") if schema_file else None,
        mode=mode, key_columns=key_columns, date_column=destination.get("date_column"), date_range=date_range,
        field_map=field_map, key_fields=key_fields, source_url=source_url,
        partition_field=destination.get("partition_field"), cluster_fields=destination.get("cluster_fields") or (),
        batch_size=int_option(destination, "batch_size", services.settings.write_batch_size, 1, 50_000),
    )


async def extract_to_table(*, http: Any, request: PageRequest, auth: Auth, paginator: Paginator,
                           data_path: str | None, sink: TableSink, batch_size: int, max_pages: int,
                           overlap: bool = True) -> dict[str, Any]:
    """Stream every page into the sink's one write in batches of `batch_size` (with `overlap`, a batch is
    spooled while the next pages are fetched; at most two batches in memory), loaded when the pages end.

    When page N fails, an append or merge step still writes the rows of pages 1..N-1 (one load) before the
    error is raised again (same class, same code, so the ack policy is unchanged) with a message that names
    page N. A replace mode writes nothing then: its table keeps its earlier content rather than being
    swapped for a partial extraction."""
    clock = time.perf_counter()
    removed = await sink.prepare()
    pages = 0
    async with sink.open_write() as write:
        buffer = BatchBuffer(batch_size, write.send, overlap=overlap)
        async with buffer:
            try:
                async for page in iter_pages(http, request, auth, paginator, data_path, max_pages=max_pages):
                    pages = page.number
                    await buffer.add(sink.shape(page.rows, page.number))
            except PageFetchError as failure:
                await buffer.drain()  # the batch being spooled completes first
                if sink.mode in ("append", "merge"):  # pages 1..N-1 are complete: keep them
                    await buffer.flush()
                    await write.finish()
                else:
                    await write.abort()
                raise _stopped(failure, request, sink, write.rows_written) from None
            await buffer.flush()
        await write.finish()
    seconds = time.perf_counter() - clock
    written = write.rows_written
    result: dict[str, Any] = {
        "status": "SUCCESS", "rows_processed": written, "pages": pages, "batches": buffer.batches,
        "destination_table": sink.qualified, "write_mode": sink.mode, "http_requests": getattr(http, "calls", 0),
        "rows_per_second": round(written / seconds, 1) if seconds > 0 else None,
        "max_rows_in_memory": buffer.peak, "write_methods": ",".join(sorted(m for m in sink.methods if m)),
        "load_jobs": int(getattr(write.result, "load_jobs", 0) or 0),
    }
    if removed:
        result["rows_of_earlier_attempt_removed"] = removed
    if sink.dropped_fields:
        result["fields_not_in_schema"] = ", ".join(sorted(sink.dropped_fields))[:200]
    return result


def _stopped(failure: PageFetchError, request: PageRequest, sink: TableSink, written: int) -> Exception:
    cause = failure.cause
    details = {k: v for k, v in getattr(cause, "details", {}).items() if k not in ("page", "rows_written")}
    where = f"failed at page {failure.page} of {request.url.split('?', 1)[0]}: {cause}"
    if written:
        outcome = f"pages 1..{failure.page - 1} ({written} rows) were written to {sink.qualified}"
    else:
        outcome = f"nothing was written; {sink.qualified} is unchanged"
    log.warning("extraction stopped at a page", page=failure.page, rows_written=written, code=cause.code)
    return type(cause)(f"{where}; {outcome}", code=cause.code, page=failure.page, rows_written=written, **details)
