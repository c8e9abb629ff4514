"""Stand-in for Anthropic's Admin API usage and cost reports.

`GET /v1/organizations/usage_report/messages` and `GET /v1/organizations/cost_report`, as Anthropic
documents and serves them:
- `x-api-key: sk-ant-admin...` or 401 `authentication_error`; `anthropic-version` required (400 without);
  errors as `{"type": "error", "error": {"type", "message"}, "request_id"}`;
- `starting_at` (required, RFC 3339), `ending_at`; buckets snap to UTC boundaries: those that start on
  or after `starting_at` and end by `ending_at`; `bucket_width` 1m/1h/1d (cost: 1d only);
- `limit` in buckets (usage 60/1440, 24/168, 7/31; cost 7/31; beyond: 400);
- arrays in bracket form (`group_by[]=model`), at most 5 `group_by[]` (400 with the live message);
- usage rows with nested `cache_creation` and `server_tool_use`, no request count; ungrouped
  dimensions null; the default workspace is `workspace_id: null`;
- cost rows with `amount` a decimal string in cents, `currency: "USD"`, and `model`/`token_type`/
  `cost_type`/`description` set only when grouping by `description`;
- pagination by buckets with `has_more` and `next_page` (`page_` + base64 of the next bucket start);
- the Admin API's workspace list (`GET /v1/organizations/workspaces`: `limit` 1..1000, default 20,
  `after_id`/`before_id` workspace ids, `include_archived`; `data` of `workspace` objects with
  `first_id`/`last_id`/`has_more`). The default workspace has no id and is not listed;
- the Admin API's API key list (`GET /v1/organizations/api_keys`: same paging, filters `status`,
  `workspace_id`, `created_by_user_id`; `api_key` objects with `partial_key_hint`, never the key; a key of
  the default workspace has `workspace_id: null`). `leak_key_values=True` adds a `key` field, as a response
  that should not carry one, for tests that check nothing stores it.
"""

from __future__ import annotations

import argparse
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from convergence.devstack.providers.common import (
    WIDTH_SECONDS,
    GeneratedUsage,
    StandInServer,
    UsageRecord,
    UsageSource,
    aggregate,
    day_of,
    decode_cursor,
    encode_cursor,
    iso,
    run_forever,
    to_epoch,
    usage_source,
)
from convergence.devstack.providers.paging import BadRequest, id_page, page_ends, page_limit

ADMIN_KEY = "sk-ant-admin01-standin-0123456789abcdef"
MILLION = Decimal(1_000_000)
DIMENSIONS = ("api_key_id", "workspace_id", "model", "service_tier", "context_window", "inference_geo")
USAGE_LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}
COST_LIMITS = {"1d": (7, 31)}
COST_GROUPS = ("workspace_id", "description")
TOKEN_TYPES = ("uncached_input_tokens", "cache_read_input_tokens", "cache_creation.ephemeral_5m_input_tokens",
               "cache_creation.ephemeral_1h_input_tokens", "output_tokens")
_METRIC_OF = {"uncached_input_tokens": "uncached", "cache_read_input_tokens": "cache_read",
              "cache_creation.ephemeral_5m_input_tokens": "cache_5m",
              "cache_creation.ephemeral_1h_input_tokens": "cache_1h", "output_tokens": "output"}
_TOKEN_LABEL = {"uncached_input_tokens": "Input Tokens", "cache_read_input_tokens": "Cache Read Input Tokens",
                "cache_creation.ephemeral_5m_input_tokens": "5m Cache Write Input Tokens",
                "cache_creation.ephemeral_1h_input_tokens": "1h Cache Write Input Tokens",
                "output_tokens": "Output Tokens"}

# List prices, USD per 1M tokens: (input, 5m cache write, 1h cache write, cache read, output). Research 3.1.
LIST_PRICES: dict[str, tuple[str, str, str, str, str]] = {
    "claude-opus-4-6": ("5.00", "6.25", "10.00", "0.50", "25.00"),
    "claude-opus-4-5": ("5.00", "6.25", "10.00", "0.50", "25.00"),
    "claude-opus-4-1": ("15.00", "18.75", "30.00", "1.50", "75.00"),
    "claude-opus-4": ("15.00", "18.75", "30.00", "1.50", "75.00"),
    "claude-sonnet-4-5": ("3.00", "3.75", "6.00", "0.30", "15.00"),
    "claude-sonnet-4": ("3.00", "3.75", "6.00", "0.30", "15.00"),
    "claude-3-7-sonnet": ("3.00", "3.75", "6.00", "0.30", "15.00"),
    "claude-haiku-4-5": ("1.00", "1.25", "2.00", "0.10", "5.00"),
    "claude-3-5-haiku": ("0.80", "1.00", "1.60", "0.08", "4.00"),
    "claude-3-haiku": ("0.25", "0.30", "0.50", "0.03", "1.25"),
}
# Over 200K input tokens (1M-context beta): every token of the request at the premium rate.
LONG_CONTEXT_PRICES: dict[str, tuple[str, str, str, str, str]] = {
    "claude-sonnet-4-5": ("6.00", "7.50", "12.00", "0.60", "22.50"),
    "claude-sonnet-4": ("6.00", "7.50", "12.00", "0.60", "22.50"),
}
UNLISTED_PRICE = ("3.00", "3.75", "6.00", "0.30", "15.00")
BATCH_MULTIPLIER = Decimal("0.5")
WEB_SEARCH_USD = Decimal("0.01")  # $10 per 1,000 searches

DEFAULT_MODELS = ("claude-sonnet-4-20250514", "claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805",
                  "claude-haiku-4-5-20251001", "claude-3-5-haiku-20241022")
DEFAULT_WORKSPACES = (None, "wrkspc_01StandInAlpha")
DEFAULT_WORKSPACE_NAMES = {"wrkspc_01StandInAlpha": "Stand-in Alpha"}
WORKSPACES_LIMIT = (20, 1000)  # (default, max) workspaces per page
API_KEYS_LIMIT = (20, 1000)  # (default, max) API keys per page
API_KEY_STATUSES = ("active", "inactive", "archived", "expired")
# id -> (name, workspace id or None for the default workspace, status)
DEFAULT_API_KEYS: dict[str, tuple[str, str | None, str]] = {
    "apikey_01StandIn": ("Stand-in backend", "wrkspc_01StandInAlpha", "active"),
    "apikey_01StandInDefault": ("Console default", None, "archived"),
}
_SNAPSHOT = re.compile(r"-\d{8}$")


def model_base(model: str) -> str:
    return _SNAPSHOT.sub("", model)


def display_name(model: str) -> str:
    """`claude-sonnet-4-5-20250929` -> `Claude Sonnet 4.5`, `claude-3-5-haiku-...` -> `Claude Haiku 3.5`."""
    parts = model_base(model).split("-")[1:]
    numbers = [p for p in parts if p.isdigit()]
    names = [p.capitalize() for p in parts if not p.isdigit()]
    return " ".join(["Claude", *names, ".".join(numbers)]).strip()


def usage_dims(model: str, *, workspace_id: str | None = None, api_key_id: str | None = "apikey_01StandIn",
               service_tier: str = "standard", context_window: str = "0-200k",
               inference_geo: str | None = "global") -> dict[str, Any]:
    return {"api_key_id": api_key_id, "workspace_id": workspace_id, "model": model, "service_tier": service_tier,
            "context_window": context_window, "inference_geo": inference_geo}


def message_usage(when: Any, model: str, *, uncached: int = 0, cache_read: int = 0, cache_5m: int = 0,
                  cache_1h: int = 0, output: int = 0, web_search: int = 0, **dims: Any) -> UsageRecord:
    """One hour of Messages usage, for tests' fixed data sets."""
    return UsageRecord.at(when, usage_dims(model, **dims), uncached=uncached, cache_read=cache_read,
                          cache_5m=cache_5m, cache_1h=cache_1h, output=output, web_search=web_search)


def generated_usage(seed: int = 7, models: Sequence[str] | int = DEFAULT_MODELS,
                    workspaces: Sequence[str | None] = DEFAULT_WORKSPACES, density: float = 0.6) -> GeneratedUsage:
    if isinstance(models, int):
        models = list(DEFAULT_MODELS[:models]) + [f"claude-standin-{i:03d}-20250101"
                                                   for i in range(models - len(DEFAULT_MODELS))]
    combos = []
    for workspace in workspaces:
        for model in models:
            for tier in ("standard", "batch"):
                combos.append(usage_dims(model, workspace_id=workspace, service_tier=tier))
            if model_base(model) in LONG_CONTEXT_PRICES:
                combos.append(usage_dims(model, workspace_id=workspace, context_window="200k-1M"))

    def metrics(value: int, combo: Mapping[str, Any]) -> dict[str, int]:
        scale = 4 if combo["service_tier"] == "batch" else 1
        return {
            "uncached": (500 + value % 150_000) // scale,
            "cache_read": ((value >> 17) % 400_000) // scale,
            "cache_5m": ((value >> 36) % 20_000) // scale,
            "cache_1h": ((value >> 46) % 5_000) // scale,
            "output": (50 + (value >> 20) % 30_000) // scale,
            "web_search": (value >> 58) % 4 if combo["service_tier"] == "standard" else 0,
        }

    return GeneratedUsage(seed, combos, metrics, density=density)


class AnthropicStandIn(StandInServer):
    logged_headers = ("user-agent", "anthropic-version", "anthropic-beta")

    def __init__(self, *, admin_keys: Sequence[str] = (ADMIN_KEY,),
                 usage: UsageSource | Sequence[UsageRecord] | None = None,
                 prices: Mapping[str, tuple[str, str, str, str, str]] | None = None,
                 cost_adjustments: Mapping[tuple[str, str | None, str], Decimal | str] | None = None,
                 workspaces: Mapping[str, str] | None = None, archived_workspaces: Sequence[str] = (),
                 api_keys: Mapping[str, tuple[str, str | None, str]] | None = None, leak_key_values: bool = False,
                 seed: int = 7, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.api_keys = dict(DEFAULT_API_KEYS if api_keys is None else api_keys)
        self.leak_key_values = leak_key_values
        self.admin_keys = frozenset(admin_keys)
        self.workspaces = dict(DEFAULT_WORKSPACE_NAMES if workspaces is None else workspaces)  # id -> name
        self.archived_workspaces = frozenset(archived_workspaces)
        self.usage_source = usage_source(usage, lambda: generated_usage(seed))
        self.prices = {k: tuple(Decimal(x) for x in v) for k, v in {**LIST_PRICES, **(prices or {})}.items()}
        self.long_prices = {k: tuple(Decimal(x) for x in v) for k, v in LONG_CONTEXT_PRICES.items()}
        # (day, model or None, token_type or "web_search") -> USD added to that billed line.
        self.cost_adjustments = {k: Decimal(str(v)) for k, v in (cost_adjustments or {}).items()}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/organizations/usage_report/messages", self.usage),
            web.get("/v1/organizations/cost_report", self.cost_report),
            web.get("/v1/organizations/workspaces", self.list_workspaces),
            web.get("/v1/organizations/api_keys", self.list_api_keys),
        ]

    # -- errors and auth ---------------------------------------------------------------------------
    def error(self, status: int, message: str, kind: str | None = None) -> web.Response:
        kinds = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error"}
        kind = kind or kinds.get(status, "api_error")
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        return web.json_response({"type": "error", "error": {"type": kind, "message": message},
                                  "request_id": request_id}, status=status, headers={"request-id": request_id})

    def authorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("x-api-key", "") not in self.admin_keys:
            return self.error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self.error(400, "anthropic-version: header is required")
        return None

    def malformed_page(self) -> dict[str, Any]:
        return {"data": [{"starting_at": "not-a-time", "results": None}], "has_more": True,
                "next_page": encode_cursor("1970-01-01T00:00:00Z")}

    # -- query handling ------------------------------------------------------------------------------
    def _window(self, request: web.Request, limits: Mapping[str, tuple[int, int]]):
        query = request.query
        if "starting_at" not in query:
            raise BadRequest(self.error(400, "starting_at: Field required"))
        try:
            start = to_epoch(_rfc3339(query["starting_at"]))
            end = to_epoch(_rfc3339(query["ending_at"])) if "ending_at" in query else int(time.time())
        except ValueError:
            raise BadRequest(self.error(400, "starting_at/ending_at must be RFC 3339 timestamps")) from None
        width_name = query.get("bucket_width", "1d")
        if width_name not in limits:
            raise BadRequest(self.error(400, f"bucket_width: Input should be {' or '.join(repr(w) for w in limits)}"))
        limit = page_limit(query, limits[width_name], lambda maximum: self.error(
            400, f"limit: must be between 1 and {maximum} for bucket_width {width_name}"))
        if end <= start:
            raise BadRequest(self.error(400, "Invalid date range: ending date must be after starting date"))
        width = WIDTH_SECONDS[width_name]
        first = -(-start // width) * width  # buckets that start on or after starting_at
        cursor = query.get("page")
        if cursor:
            decoded = decode_cursor(cursor)
            try:
                first = to_epoch(_rfc3339(decoded or ""))
            except ValueError:
                raise BadRequest(self.error(400, "page: invalid page token")) from None
        if "group_by" in query:
            raise BadRequest(self.error(400, "group_by: use the array form group_by[]"))
        group_by = list(dict.fromkeys(query.getall("group_by[]", [])))
        if len(query.getall("group_by[]", [])) > 5:
            raise BadRequest(self.error(400, "Cannot specify more than 5 group_by[] dimensions."))
        buckets: list[tuple[int, int]] = []
        bucket = first
        while bucket + width <= end and len(buckets) < limit:
            buckets.append((bucket, bucket + width))
            bucket += width
        next_start = bucket if bucket + width <= end else None
        return buckets, next_start, group_by

    @staticmethod
    def _page(buckets: list[dict[str, Any]], next_start: int | None) -> web.Response:
        return web.json_response({"data": buckets, "has_more": next_start is not None,
                                  "next_page": encode_cursor(iso(next_start)) if next_start is not None else None})

    # -- usage report ----------------------------------------------------------------------------------
    async def usage(self, request: web.Request) -> web.Response:
        spans, next_start, group_by = self._window(request, USAGE_LIMITS)
        for value in group_by:
            if value not in DIMENSIONS:
                return self.error(400, f"group_by[]: Input should be one of {', '.join(DIMENSIONS)}")
        filters: dict[str, set[Any]] = {}
        for param, dim in (("models[]", "model"), ("workspace_ids[]", "workspace_id"),
                           ("api_key_ids[]", "api_key_id"), ("service_tiers[]", "service_tier"),
                           ("context_window[]", "context_window")):
            values = request.query.getall(param, [])
            if values:
                filters[dim] = set(values)
        buckets = []
        for start, stop in spans:
            rows = aggregate(self.usage_source.records(start, stop), group_by, DIMENSIONS, filters)
            buckets.append({"starting_at": iso(start), "ending_at": iso(stop),
                            "results": [self._usage_result(d, m, group_by) for d, m in rows]})
        return self._page(buckets, next_start)

    @staticmethod
    def _usage_result(dims: dict[str, Any], m: dict[str, int], group_by: Sequence[str]) -> dict[str, Any]:
        result = {k: v for k, v in dims.items() if k != "inference_geo" or "inference_geo" in group_by}
        result.update({
            "uncached_input_tokens": m.get("uncached", 0),
            "cache_read_input_tokens": m.get("cache_read", 0),
            "cache_creation": {"ephemeral_5m_input_tokens": m.get("cache_5m", 0),
                               "ephemeral_1h_input_tokens": m.get("cache_1h", 0)},
            "output_tokens": m.get("output", 0),
            "server_tool_use": {"web_search_requests": m.get("web_search", 0)},
        })
        return result

    # -- cost report -----------------------------------------------------------------------------------
    def price(self, model: str, context_window: str | None) -> tuple[Decimal, ...]:
        base = model_base(model)
        if context_window == "200k-1M" and base in self.long_prices:
            return self.long_prices[base]
        return self.prices.get(model, self.prices.get(base, tuple(Decimal(x) for x in UNLISTED_PRICE)))

    def billed_lines(self, start: int, end: int) -> dict[tuple, Decimal]:
        """(workspace, model, token_type, service_tier, context_window, cost_type) -> USD."""
        lines: dict[tuple, Decimal] = {}
        for record in self.usage_source.records(start, end):
            d, m = record.dims, record.metrics
            prices = dict(zip(("uncached_input_tokens", "cache_creation.ephemeral_5m_input_tokens",
                               "cache_creation.ephemeral_1h_input_tokens", "cache_read_input_tokens",
                               "output_tokens"), self.price(d["model"], d.get("context_window")), strict=True))
            multiplier = BATCH_MULTIPLIER if d.get("service_tier") == "batch" else Decimal(1)
            for token_type in TOKEN_TYPES:
                tokens = m.get(_METRIC_OF[token_type], 0)
                if tokens:
                    key = (d.get("workspace_id"), d["model"], token_type, d.get("service_tier"),
                           d.get("context_window"), "tokens")
                    lines[key] = lines.get(key, Decimal(0)) + tokens * prices[token_type] * multiplier / MILLION
            if m.get("web_search"):
                key = (d.get("workspace_id"), None, None, None, None, "web_search")
                lines[key] = lines.get(key, Decimal(0)) + m["web_search"] * WEB_SEARCH_USD
        day = day_of(start)
        for (adj_day, model, kind), delta in self.cost_adjustments.items():
            if adj_day != day:
                continue
            searches = kind == "web_search"
            match = next((k for k in sorted(lines, key=str) if k[1] == model
                          and (k[2] == kind or (searches and k[5] == "web_search"))), None)
            key = match or (None, model, kind, "standard", "0-200k", "tokens")
            lines[key] = lines.get(key, Decimal(0)) + delta
        return lines

    async def cost_report(self, request: web.Request) -> web.Response:
        spans, next_start, group_by = self._window(request, COST_LIMITS)
        for value in group_by:
            if value not in COST_GROUPS:
                return self.error(400, f"group_by[]: Input should be one of {', '.join(COST_GROUPS)}")
        by_description = "description" in group_by
        by_workspace = "workspace_id" in group_by
        buckets = []
        for start, stop in spans:
            grouped: dict[tuple, Decimal] = {}
            for (workspace, model, token_type, tier, window, cost_type), usd in self.billed_lines(start, stop).items():
                key = ((workspace if by_workspace else None),
                       *((model, token_type, tier, window, cost_type) if by_description else (None,) * 5))
                grouped[key] = grouped.get(key, Decimal(0)) + usd
            results = []
            for (workspace, model, token_type, tier, window, cost_type), usd in sorted(grouped.items(),
                                                                                      key=lambda kv: str(kv[0])):
                results.append({
                    "currency": "USD",
                    "amount": _cents(usd),
                    "workspace_id": workspace,
                    "description": _description(model, token_type, cost_type) if by_description else None,
                    "cost_type": cost_type,
                    "context_window": window,
                    "model": model,
                    "service_tier": tier,
                    "token_type": token_type,
                })
            buckets.append({"starting_at": iso(start), "ending_at": iso(stop), "results": results})
        return self._page(buckets, next_start)


    # -- workspaces (Admin API) -------------------------------------------------------------------------
    def _list_limit(self, request: web.Request, bounds: tuple[int, int]) -> int:
        return page_limit(request.query, bounds,
                          lambda maximum: self.error(400, f"limit: Input should be between 1 and {maximum}"))

    def _id_page(self, request: web.Request, ids: Sequence[str], limit: int, noun: str) -> tuple[list[str], bool]:
        """The page `after_id` or `before_id` asks for (at most one of them); `noun` names the ids in errors."""
        after, before = request.query.get("after_id"), request.query.get("before_id")
        if after and before:
            raise BadRequest(self.error(400, "Only one of after_id and before_id may be given"))
        return id_page(ids, limit, lambda: self.error(400, f"{'after_id' if after else 'before_id'}: unknown {noun}"),
                       after=after, before=before)

    async def list_workspaces(self, request: web.Request) -> web.Response:
        limit = self._list_limit(request, WORKSPACES_LIMIT)
        archived = request.query.get("include_archived", "false").lower() == "true"
        ids = [w for w in sorted(self.workspaces) if archived or w not in self.archived_workspaces]
        page, more = self._id_page(request, ids, limit, "workspace id")
        data = [{"id": w, "type": "workspace", "name": self.workspaces[w],
                 "created_at": f"2024-10-30T23:58:{n % 60:02d}.427722Z",
                 "archived_at": "2024-11-01T23:59:27.427722Z" if w in self.archived_workspaces else None,
                 "display_color": "#6C5BB9"} for n, w in enumerate(page)]
        return web.json_response({"data": data, "has_more": more, **page_ends(page)})

    # -- API keys (Admin API) ---------------------------------------------------------------------------
    @staticmethod
    def secret(key_id: str) -> str:
        return f"sk-ant-api03-{key_id}-0123456789abcdefSECRET-AA"

    async def list_api_keys(self, request: web.Request) -> web.Response:
        limit = self._list_limit(request, API_KEYS_LIMIT)
        status = request.query.get("status")
        if status is not None and status not in API_KEY_STATUSES:
            return self.error(400, f"status: Input should be {', '.join(repr(s) for s in API_KEY_STATUSES)}")
        workspace = request.query.get("workspace_id")
        ids = [k for k in sorted(self.api_keys) if (status is None or self.api_keys[k][2] == status)
               and (workspace is None or self.api_keys[k][1] == workspace)]
        page, more = self._id_page(request, ids, limit, "API key id")

        def item(key_id: str, n: int) -> dict[str, Any]:
            name, workspace_id, key_status = self.api_keys[key_id]
            value = self.secret(key_id)
            out = {"id": key_id, "type": "api_key", "name": name, "workspace_id": workspace_id,
                   "created_at": f"2024-10-30T23:58:{n % 60:02d}.427722Z",
                   "created_by": {"id": "user_01StandInAdmin", "type": "user"},
                   "partial_key_hint": f"{value[:16]}...{value[-4:]}", "status": key_status}
            return {**out, "key": value} if self.leak_key_values else out
        return web.json_response({"data": [item(k, n) for n, k in enumerate(page)], "has_more": more,
                                  **page_ends(page)})


def _description(model: str | None, token_type: str | None, cost_type: str | None) -> str | None:
    if cost_type == "web_search":
        return "Web Search Usage"
    if model is None or token_type is None:
        return None
    return f"{display_name(model)} Usage - {_TOKEN_LABEL[token_type]}"


def _cents(usd: Decimal) -> str:
    """USD -> decimal string in cents (lowest currency unit), fractional cents kept: "123.45" is $1.2345."""
    text = format((usd * 100).normalize(), "f")
    return text if text != "-0" else "0"


def _rfc3339(text: str) -> datetime:
    if "T" not in text:
        raise ValueError(text)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m convergence.devstack.providers.anthropic_server",
                                     description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--models", type=int, default=len(DEFAULT_MODELS))
    parser.add_argument("--admin-key", default=ADMIN_KEY)
    args = parser.parse_args(argv)
    run_forever(AnthropicStandIn(admin_keys=(args.admin_key,), usage=generated_usage(args.seed, args.models),
                                 port=args.port))


if __name__ == "__main__":
    main()
