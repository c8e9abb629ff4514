"""REST extraction building blocks: auth classes, paginators, a page source and a bounded batch buffer.

Small, single-purpose pieces chosen by config (the design of dlt's REST client: one interface per
concern, a class per variant), used by `generic.api_extractor` and `gcp.api_extractor`:

- `auth`: bearer / header / query / basic / none behind one `Auth` interface (`apply(request)`).
- `paginators`: cursor / offset / page / link / none behind one `Paginator` interface.
- `source`: `iter_pages()` fetches page after page through the platform's retrying HTTP client and
  yields each page's rows, so nothing ever holds more than one page.
- `batching`: `BatchBuffer` hands rows to a sink in batches of `batch_size` as they fill.
- `jsonpath`: dotted paths (`meta.next_cursor`, `items.*.instances`) into response bodies.
"""

from convergence.extractors.auth import Auth, BasicAuth, BearerAuth, HeaderAuth, NoAuth, QueryAuth, build_auth
from convergence.extractors.batching import BatchBuffer
from convergence.extractors.jsonpath import get_path, select_rows
from convergence.extractors.paginators import (
    CursorPaginator,
    LinkPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    Paginator,
    SinglePagePaginator,
    build_paginator,
)
from convergence.extractors.request import PageRequest
from convergence.extractors.source import Page, PageFetchError, iter_pages

__all__ = [
    "Auth", "BasicAuth", "BatchBuffer", "BearerAuth", "CursorPaginator", "HeaderAuth", "LinkPaginator",
    "NoAuth", "OffsetPaginator", "Page", "PageFetchError", "PageNumberPaginator", "PageRequest", "Paginator",
    "QueryAuth", "SinglePagePaginator", "build_auth", "build_paginator", "get_path", "iter_pages",
    "select_rows",
]
