"""The extraction loop shared by `generic.api_extractor` and `gcp.api_extractor`: pages -> rows ->
batches -> the warehouse, with partial progress kept and reported when a page fails."""

from __future__ import annotations

import time
from typing import Any

import structlog

from convergence.extractors.auth import Auth
from convergence.extractors.batching import BatchBuffer
from convergence.extractors.paginators import Paginator
from convergence.extractors.request import PageRequest
from convergence.extractors.source import PageFetchError, iter_pages
from convergence.processors.generic._sink import TableSink

log = structlog.get_logger(__name__)


async def extract_to_table(*, http: Any, request: PageRequest, auth: Auth, paginator: Paginator,
                           data_path: str | None, sink: TableSink, batch_size: int, max_pages: int,
                           overlap: bool = True) -> dict[str, Any]:
    """Stream every page into `sink` in batches of `batch_size` (with `overlap`, a batch is written while
    the next pages are fetched; at most two batches in memory).

    When page N fails, the rows of pages 1..N-1 are written before the error is raised again (same
    class, same code, so the ack policy is unchanged) with a message that names page N."""
    clock = time.perf_counter()
    removed = await sink.prepare()
    buffer = BatchBuffer(batch_size, sink.write, overlap=overlap)
    pages = 0
    async with buffer:
        try:
            async for page in iter_pages(http, request, auth, paginator, data_path, max_pages=max_pages):
                pages = page.number
                await buffer.add(sink.shape(page.rows, page.number))
        except PageFetchError as failure:
            await buffer.drain()  # the batch being written completes first
            # Pages 1..N-1 are complete: keep them. Exception: a replace mode that has not replaced anything
            # yet keeps the table's earlier content rather than swapping it for a partial extraction.
            if buffer.rows and (sink.mode in ("append", "merge") or buffer.batches > 0):
                await buffer.flush()
            cause = failure.cause
            details = {k: v for k, v in getattr(cause, "details", {}).items() if k not in ("page", "rows_written")}
            where = f"failed at page {failure.page} of {request.url.split('?', 1)[0]}: {cause}"
            if buffer.written:
                outcome = f"pages 1..{failure.page - 1} ({buffer.written} rows) were written to {sink.qualified}"
            else:
                outcome = f"nothing was written; {sink.qualified} is unchanged"
            log.warning("extraction stopped at a page", page=failure.page, rows_written=buffer.written,
                        code=cause.code)
            raise type(cause)(f"{where}; {outcome}", code=cause.code, page=failure.page,
                              rows_written=buffer.written, **details) from None
        await buffer.flush()
    seconds = time.perf_counter() - clock
    result: dict[str, Any] = {
        "status": "SUCCESS", "rows_processed": buffer.written, "pages": pages, "batches": buffer.batches,
        "destination_table": sink.qualified, "write_mode": sink.mode, "http_requests": getattr(http, "calls", 0),
        "rows_per_second": round(buffer.written / seconds, 1) if seconds > 0 else None,
        "max_rows_in_memory": buffer.peak, "write_methods": ",".join(sorted(m for m in sink.methods if m)),
    }
    if removed:
        result["rows_of_earlier_attempt_removed"] = removed
    if sink.dropped_fields:
        result["fields_not_in_schema"] = ", ".join(sorted(sink.dropped_fields))[:200]
    return result
