"""The provider stand-ins speak the real wire formats, as documented and as observed live."""

from __future__ import annotations

import aiohttp
import pytest

from convergence.devstack.providers.anthropic_server import ADMIN_KEY as ANT_KEY
from convergence.devstack.providers.anthropic_server import AnthropicStandIn, message_usage
from convergence.devstack.providers.common import to_epoch
from convergence.devstack.providers.openai_server import ADMIN_KEY as OAI_KEY
from convergence.devstack.providers.openai_server import OpenAIStandIn, completion

OAI = {"Authorization": f"Bearer {OAI_KEY}"}
ANT = {"x-api-key": ANT_KEY, "anthropic-version": "2023-06-01"}
DAY = 86400


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def get(session, url, params=(), headers=None):
    async with session.get(url, params=list(params), headers=headers or {}) as response:
        return response.status, await response.json(), response.headers


async def test_openai_auth_errors_use_openai_error_body(http):
    async with OpenAIStandIn(completions=[]) as server:
        url = f"{server.base_url}/v1/organization/usage/completions"
        status, body, _ = await get(http, url, [("start_time", "0")])
        assert status == 401 and body["error"]["type"] == "invalid_request_error"
        status, body, _ = await get(http, url, [("start_time", "0")],
                                    {"Authorization": "Bearer sk-proj-not-an-admin-key-1234"})
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert "sk-proj-not-an-admin-key-1234" not in body["error"]["message"]  # masked, like the real API
        assert not any(r.authorized for r in server.requests)


async def test_openai_usage_buckets_grouping_and_pages(http):
    start = to_epoch("2026-03-01")
    usage = [completion("2026-03-01T10:00:00Z", "gpt-4o-2024-08-06", uncached=10, cached=5, output=3),
             completion("2026-03-01T11:00:00Z", "gpt-4o-mini-2024-07-18", uncached=1, output=1),
             completion("2026-03-03T00:00:00Z", "gpt-4o-2024-08-06", uncached=7, output=2, project_id="proj_b")]
    async with OpenAIStandIn(completions=usage) as server:
        url = f"{server.base_url}/v1/organization/usage/completions"
        base = [("start_time", str(start + 3600)), ("end_time", str(start + 3 * DAY)), ("limit", "2")]
        status, page, _ = await get(http, url, base + [("group_by", "model"), ("group_by[]", "project_id")], OAI)
        assert status == 200 and page["object"] == "page" and page["has_more"] is True
        first, second = page["data"]
        # The first bucket starts exactly at start_time, later ones on UTC midnights; empty buckets stay.
        assert (first["start_time"], first["end_time"]) == (start + 3600, start + DAY)
        assert (second["start_time"], second["results"]) == (start + DAY, [])
        result = first["results"][0]
        assert result["object"] == "organization.usage.completions.result"
        assert result["input_tokens"] == 15 and result["input_uncached_tokens"] == 10
        assert result["batch"] is None and result["user_id"] is None  # not grouped: null
        status, last, _ = await get(http, url, base + [("group_by", "model"), ("page", page["next_page"])], OAI)
        assert last["has_more"] is False and last["next_page"] is None
        assert [r["model"] for r in last["data"][0]["results"]] == ["gpt-4o-2024-08-06"]
        assert last["data"][0]["results"][0]["project_id"] is None

        for params, fragment in (([("end_time", "1")], "start_time"),
                                 (base[:2] + [("limit", "32")], "limit"),
                                 (base + [("bucket_width", "1w")], "bucket_width"),
                                 (base + [("group_by", "colour")], "group_by"),
                                 (base + [("page", "nonsense")], "page")):
            status, body, _ = await get(http, url, params, OAI)
            assert status == 400 and fragment in body["error"]["message"]


async def test_openai_costs_and_faults(http):
    usage = [completion("2026-03-01T10:00:00Z", "gpt-4o-mini-2024-07-18", uncached=1_000_000, cached=1_000_000,
                        output=1_000_000)]
    async with OpenAIStandIn(completions=usage, amount_as_string=True) as server:
        url = f"{server.base_url}/v1/organization/costs"
        window = [("start_time", str(to_epoch("2026-03-01"))), ("end_time", str(to_epoch("2026-03-02")))]
        status, page, _ = await get(http, url, window + [("group_by", "line_item")], OAI)
        lines = {r["line_item"]: r for r in page["data"][0]["results"]}
        assert set(lines) == {"gpt-4o-mini-2024-07-18, input", "gpt-4o-mini-2024-07-18, cached input",
                              "gpt-4o-mini-2024-07-18, output"}
        assert lines["gpt-4o-mini-2024-07-18, output"]["amount"] == {
            "value": "0.600000000000000000000000000000000000000", "currency": "usd"}
        status, body, _ = await get(http, url, window + [("group_by", "api_key_id")], OAI)
        assert status == 400  # as the live API did in July 2026
        status, body, _ = await get(http, url, window + [("bucket_width", "1h")], OAI)
        assert status == 400

        server.inject(429, path="/v1/organization/costs", retry_after=2)
        status, body, headers = await get(http, url, window, OAI)
        assert status == 429 and headers["Retry-After"] == "2" and body["error"]["type"] == "rate_limit_exceeded"
        status, body, _ = await get(http, url, window, OAI)
        assert status == 200 and body["data"][0]["results"][0]["line_item"] is None


async def test_anthropic_headers_grouping_buckets_and_cents(http):
    usage = [message_usage("2026-03-01T10:00:00Z", "claude-sonnet-4-20250514", uncached=100, cache_5m=7,
                           cache_1h=3, output=50, web_search=2)]
    async with AnthropicStandIn(usage=usage) as server:
        url = f"{server.base_url}/v1/organizations/usage_report/messages"
        window = [("starting_at", "2026-03-01T06:00:00Z"), ("ending_at", "2026-03-03T00:00:00Z")]
        status, body, _ = await get(http, url, window, {"x-api-key": ANT_KEY})
        assert status == 400 and body["type"] == "error" and "anthropic-version" in body["error"]["message"]
        status, body, _ = await get(http, url, window, {"x-api-key": "sk-ant-api03-user-key",
                                                        "anthropic-version": "2023-06-01"})
        assert status == 401 and body["error"]["type"] == "authentication_error" and body["request_id"]
        too_many = [("group_by[]", g) for g in ("api_key_id", "workspace_id", "model", "service_tier",
                                                 "context_window", "inference_geo")]
        status, body, _ = await get(http, url, window + too_many, ANT)
        assert status == 400 and body["error"]["message"] == "Cannot specify more than 5 group_by[] dimensions."

        status, page, _ = await get(http, url, window + [("group_by[]", "model"), ("limit", "1")], ANT)
        # Buckets start on or after starting_at, snapped to UTC days: 06:00 on the 1st -> the 2nd.
        assert [b["starting_at"] for b in page["data"]] == ["2026-03-02T00:00:00Z"]
        assert page["has_more"] is False
        status, page, _ = await get(http, url, [("starting_at", "2026-03-01T00:00:00Z"),
                                                ("ending_at", "2026-03-03T00:00:00Z"), ("group_by[]", "model"),
                                                ("limit", "1")], ANT)
        row = page["data"][0]["results"][0]
        assert row["cache_creation"] == {"ephemeral_5m_input_tokens": 7, "ephemeral_1h_input_tokens": 3}
        assert row["server_tool_use"] == {"web_search_requests": 2} and "cache_creation_input_tokens" not in row
        assert row["workspace_id"] is None and page["has_more"] is True
        assert page["next_page"] == "page_MjAyNi0wMy0wMlQwMDowMDowMFo="  # base64 of the next bucket start

        cost_url = f"{server.base_url}/v1/organizations/cost_report"
        day = [("starting_at", "2026-03-01T00:00:00Z"), ("ending_at", "2026-03-02T00:00:00Z")]
        status, page, _ = await get(http, cost_url, day + [("group_by[]", "description")], ANT)
        results = {(r["token_type"], r["cost_type"]): r for r in page["data"][0]["results"]}
        output = results[("output_tokens", "tokens")]
        assert output["amount"] == "0.075" and output["currency"] == "USD"  # 50 x $15/1M = $0.00075 = 0.075 cents
        assert output["description"] == "Claude Sonnet 4 Usage - Output Tokens"
        assert results[(None, "web_search")]["amount"] == "2" and results[(None, "web_search")]["model"] is None
        status, page, _ = await get(http, cost_url, day, ANT)
        assert [r["model"] for r in page["data"][0]["results"]] == [None]
        status, body, _ = await get(http, cost_url, [("starting_at", "2026-03-01T00:00:00Z"),
                                                     ("ending_at", "2026-03-01T00:00:00Z")], ANT)
        assert status == 400 and "Invalid date range" in body["error"]["message"]
        status, body, _ = await get(http, cost_url, day + [("bucket_width", "1h")], ANT)
        assert status == 400


async def test_openai_lists_page_after_an_id_and_refuse_bad_pages_in_openai_errors(http):
    users = {f"user_{n}": f"User {n}" for n in range(3)}
    async with OpenAIStandIn(completions=[], users=users) as server:
        url = f"{server.base_url}/v1/organization/users"
        status, page, _ = await get(http, url, [("limit", "2")], OAI)
        assert status == 200 and [u["id"] for u in page["data"]] == ["user_0", "user_1"]
        assert (page["object"], page["first_id"], page["last_id"], page["has_more"]) == ("list", "user_0", "user_1",
                                                                                        True)
        status, page, _ = await get(http, url, [("limit", "2"), ("after", "user_1")], OAI)
        assert [u["id"] for u in page["data"]] == ["user_2"] and page["has_more"] is False
        status, page, _ = await get(http, url, [("after", "user_2")], OAI)
        assert (page["data"], page["first_id"], page["last_id"], page["has_more"]) == ([], None, None, False)
        for params, param in (([("limit", "0")], "limit"), ([("limit", "101")], "limit"),
                              ([("limit", "many")], "limit"), ([("after", "user_9")], "after")):
            status, body, _ = await get(http, url, params, OAI)
            assert status == 400 and body["error"]["param"] == param, params
            assert body["error"]["type"] == "invalid_request_error" and param in body["error"]["message"]
        assert [r.status for r in server.calls(url.removeprefix(server.base_url))][-4:] == [400] * 4


async def test_anthropic_lists_page_by_after_or_before_id_and_refuse_bad_pages_in_anthropic_errors(http):
    workspaces = {f"wrkspc_{n}": f"Workspace {n}" for n in range(3)}
    async with AnthropicStandIn(usage=[], workspaces=workspaces) as server:
        url = f"{server.base_url}/v1/organizations/workspaces"
        status, page, _ = await get(http, url, [("limit", "2")], ANT)
        assert [w["id"] for w in page["data"]] == ["wrkspc_0", "wrkspc_1"] and page["has_more"] is True
        assert (page["first_id"], page["last_id"]) == ("wrkspc_0", "wrkspc_1") and "object" not in page
        status, page, _ = await get(http, url, [("limit", "1"), ("after_id", "wrkspc_0")], ANT)
        assert [w["id"] for w in page["data"]] == ["wrkspc_1"] and page["has_more"] is True
        # before_id: the last `limit` ids before it
        status, page, _ = await get(http, url, [("limit", "1"), ("before_id", "wrkspc_2")], ANT)
        assert [w["id"] for w in page["data"]] == ["wrkspc_1"] and page["has_more"] is True
        status, page, _ = await get(http, url, [("before_id", "wrkspc_0")], ANT)
        assert (page["data"], page["first_id"], page["has_more"]) == ([], None, False)
        for params, message in (
                ([("limit", "0")], "limit: Input should be between 1 and 1000"),
                ([("limit", "many")], "limit: Input should be between 1 and 1000"),
                ([("after_id", "wrkspc_0"), ("before_id", "wrkspc_2")],
                 "Only one of after_id and before_id may be given"),
                ([("after_id", "wrkspc_9")], "after_id: unknown workspace id"),
                ([("before_id", "wrkspc_9")], "before_id: unknown workspace id")):
            status, body, headers = await get(http, url, params, ANT)
            assert status == 400 and body["type"] == "error", params
            assert body["error"] == {"type": "invalid_request_error", "message": message}
            assert body["request_id"] == headers["request-id"]
        keys_url = f"{server.base_url}/v1/organizations/api_keys"
        status, body, _ = await get(http, keys_url, [("after_id", "apikey_nope")], ANT)
        assert status == 400 and body["error"]["message"] == "after_id: unknown API key id"
