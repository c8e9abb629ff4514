"""Request plumbing the OpenAI and Anthropic stand-ins share: a `limit` within the provider's bounds, a page of
an id list by cursor ids, and a bad request answered from anywhere in a handler with the provider's own error
body. The messages stay the provider's: each caller passes the function that builds its answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from aiohttp import web


class BadRequest(Exception):
    """Raised while reading a request; StandInServer answers with `response`, the provider's error body."""

    def __init__(self, response: web.Response):
        super().__init__(response.status)
        self.response = response


def page_limit(query: Mapping[str, str], bounds: tuple[int, int], invalid: Callable[[int], web.Response]) -> int:
    """The query's `limit`, `bounds` being (default, maximum); not a number or outside 1..maximum: BadRequest
    with `invalid(maximum)`."""
    default, maximum = bounds
    try:
        limit = int(query.get("limit", default))
    except ValueError:
        limit = -1
    if not 1 <= limit <= maximum:
        raise BadRequest(invalid(maximum))
    return limit


def id_page(ids: Sequence[str], limit: int, unknown: Callable[[], web.Response], *, after: str | None,
            before: str | None = None) -> tuple[list[str], bool]:
    """Up to `limit` ids following the id `after` (or the last `limit` preceding `before`), and whether more ids
    lie beyond the page; a cursor that is not one of `ids`: BadRequest with `unknown()`."""
    ids = list(ids)
    cursor = after or before
    if cursor and cursor not in ids:
        raise BadRequest(unknown())
    if after:
        ids = ids[ids.index(after) + 1:]
    elif before:
        ids = ids[:ids.index(before)]
        return ids[-limit:], len(ids) > limit
    return ids[:limit], len(ids) > limit


def page_ends(page: Sequence[str]) -> dict[str, str | None]:
    """A list page's `first_id` and `last_id`, null on an empty page."""
    return {"first_id": page[0] if page else None, "last_id": page[-1] if page else None}
