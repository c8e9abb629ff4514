"""The extractors toolkit: paginators and auth chosen by name from one map (each class reads its own keys
in `from_config`), and the LLM report pages on iter_pages with a CursorPaginator."""

from __future__ import annotations

import pytest

from convergence.extractors.auth import AUTHS, BasicAuth, HeaderAuth, NoAuth, build_auth
from convergence.extractors.paginators import (
    PAGINATORS,
    CursorPaginator,
    LinkPaginator,
    OffsetPaginator,
    build_paginator,
)
from convergence.extractors.request import PageRequest
from convergence.pipeline.errors import PermanentStepError, StepError
from convergence.processors._llm.client import report_pages


def test_the_maps_name_every_class():
    assert set(PAGINATORS) == {"none", "cursor", "offset", "page", "link"}
    assert set(AUTHS) == {"bearer", "header", "query", "basic", "none"}
    assert all(cls.type == name for name, cls in {**PAGINATORS, **AUTHS}.items())


def test_build_uses_the_class_from_config():
    cursor = build_paginator({"type": "cursor", "param": "after", "response_path": "meta.next", "limit": 50})
    assert isinstance(cursor, CursorPaginator)
    assert (cursor.param, cursor.response_path, cursor.limit_param, cursor.limit) == ("after", "meta.next", "limit", 50)
    assert isinstance(build_paginator({"type": "LINK"}), LinkPaginator)
    assert isinstance(build_paginator(None), PAGINATORS["none"])
    with pytest.raises(PermanentStepError, match="needs `limit`"):
        OffsetPaginator.from_config({})
    with pytest.raises(PermanentStepError, match="pagination.type 'scroll' is not one of none, cursor"):
        build_paginator({"type": "scroll"})
    header = build_auth({"type": "header", "header_name": "X-Key", "prefix": "Token "}, "s3cret")
    assert isinstance(header, HeaderAuth) and (header.header_name, header.prefix) == ("X-Key", "Token ")
    assert isinstance(build_auth({"type": "basic", "username": "u"}, "pw"), BasicAuth)
    assert isinstance(build_auth({}, None), NoAuth)
    with pytest.raises(PermanentStepError) as caught:
        build_auth({"type": "bearer"}, None)
    assert caught.value.code == "CREDENTIAL_NOT_FOUND"


@pytest.mark.parametrize(("kind", "default_param"), [("cursor", "limit"), ("offset", "limit"), ("page", "per_page")])
def test_every_sized_type_reads_the_page_size_the_same_way(kind, default_param):
    paginator = build_paginator({"type": kind, "limit": "25", "has_more_path": "meta.more"})
    assert (paginator.limit_param, paginator.limit, paginator.has_more_path) == (default_param, 25, "meta.more")
    named = build_paginator({"type": kind, "limit": 5, "limit_param": "size"})
    assert (named.limit_param, named.limit) == ("size", 5)
    request = PageRequest("GET", "https://api.example/v1/r")
    named.start(request)
    assert request.params["size"] == 5
    for bad, message in (({"limit": 0}, "pagination.limit must be at least 1"),
                         ({"limit": "many"}, "pagination.limit 'many' is not a whole number"),
                         ({"limit": 5, "limit_param": "a b"}, "pagination.limit_param 'a b' is not a valid")):
        with pytest.raises(PermanentStepError, match=message):
            build_paginator({"type": kind, **bad})


def test_without_a_limit_no_page_size_is_sent():
    for kind in ("cursor", "page"):
        paginator = build_paginator({"type": kind})
        assert (paginator.limit_param, paginator.limit) == (None, None)
    assert build_paginator({"type": "link", "has_more_path": "more"}).has_more_path == "more"


def test_a_cursor_that_must_follow_has_more():
    paginator = CursorPaginator(param="page", response_path="next_page", has_more_path="has_more", require_cursor=True)
    request = PageRequest("GET", "https://api.example/v1/r")
    assert paginator.advance(request, {"has_more": True, "next_page": "p2"}, {}, 1) is True
    assert request.params["page"] == "p2"
    assert paginator.advance(request, {"has_more": False, "next_page": "p3"}, {}, 1) is False
    with pytest.raises(PermanentStepError) as caught:
        paginator.advance(request, {"has_more": True, "next_page": None}, {}, 1)
    assert caught.value.code == "PROVIDER_BAD_RESPONSE" and "gives no next_page cursor" in str(caught.value)
    with pytest.raises(PermanentStepError, match="twice"):
        paginator.advance(request, {"has_more": True, "next_page": "p2"}, {}, 1)


class Pages:
    """An admin API's report pages, as the retrying HTTP client returns them."""

    def __init__(self, *bodies):
        self.bodies = list(bodies)
        self.calls: list[tuple[str, list[tuple[str, str]] | None, dict | None]] = []

    async def request_json(self, method, url, params=None, headers=None, json=None):
        self.calls.append((url, params, headers))
        return self.bodies[len(self.calls) - 1], {}


async def collect(http):
    return [page async for page in report_pages(http, "https://api.example/v1/usage",
                                                [("group_by[]", "model"), ("group_by[]", "project_id"),
                                                 ("start_time", "1")], {"x-api-key": "k"}, "example")]


async def test_report_pages_follow_next_page_until_has_more_is_false():
    http = Pages({"data": [1], "has_more": True, "next_page": "c2"}, {"data": [2], "has_more": False})
    pages = await collect(http)
    assert [p.rows for p in pages] == [[1], [2]]
    first, second = http.calls
    assert first[1] == [("group_by[]", "model"), ("group_by[]", "project_id"), ("start_time", "1")]
    assert second[1][-1] == ("page", "c2") and second[2] == {"x-api-key": "k"}


@pytest.mark.parametrize("bodies,fragment", [
    (({"items": []},), "page 1 from https://api.example/v1/usage has no 'data' list"),
    (({"data": [], "has_more": True},), "gives no next_page cursor"),
    (({"data": [], "has_more": True, "next_page": "a"}, {"data": [], "has_more": True, "next_page": "a"}),
     "twice"),
])
async def test_malformed_report_pages_are_permanent_bad_responses(bodies, fragment):
    with pytest.raises(StepError) as caught:
        await collect(Pages(*bodies))
    assert caught.value.code == "PROVIDER_BAD_RESPONSE" and not caught.value.retryable
    assert fragment in str(caught.value)


class Store:
    """A credential store: org -> provider -> secret, counting lookups."""

    def __init__(self, secrets):
        self.secrets = secrets
        self.calls = 0

    def get(self, org, provider):
        self.calls += 1
        return self.secrets[(org, provider)]


async def test_one_resolver_for_the_llm_steps_and_the_extractors():
    from types import SimpleNamespace

    from convergence.extractors.credentials import resolve_credential
    from convergence.pipeline.context import RunContext
    from convergence.processors._llm.client import provider_secret

    store = Store({("acme", "OPENAI"): "sk-stored"})
    context = RunContext("acme", "r1", "p", services=SimpleNamespace(credentials=store))
    # The LLM steps: the slot a kms_decrypt step filled comes first, the store is not asked.
    context.secrets["openai_admin"] = "sk-slot"
    assert await provider_secret({"secret_name": "openai_admin"}, context, "OPENAI") == "sk-slot"
    assert store.calls == 0
    # Without it: the store, and the value is kept in the context (so it is masked).
    assert await provider_secret({}, context, "OPENAI") == "sk-stored"
    assert store.calls == 1 and context.secrets["openai"] == "sk-stored"
    # The extractors' order: context secrets by provider, then the store, then the named secret.
    found = await resolve_credential(context, "OPENAI", "openai_admin")
    assert (found.value, found.source) == ("sk-stored", "context_secrets")
    with pytest.raises(StepError) as caught:
        await resolve_credential(context, "ANTHROPIC")
    assert caught.value.code == "CREDENTIAL_NOT_FOUND"
    assert "org_integration_credentials (ANTHROPIC)" in str(caught.value)
