"""Stand-in for OpenAI's Organization Usage API and Costs API (`/v1/organization/usage/*`, `/v1/organization/costs`),
and the Admin API's name lists, each a `list` with `first_id`/`last_id`/`has_more`, paged by `after` (an id
of the previous page) and `limit` (1..100, default 20; over: 400):
- projects (`GET /v1/organization/projects`, `include_archived`): `organization.project` objects;
- users (`GET /v1/organization/users`, `emails` filter): `organization.user` objects;
- admin keys (`GET /v1/organization/admin_api_keys`, `order` asc/desc): `organization.admin_api_key`
  objects with `redacted_value` and their owner;
- project keys (`GET /v1/organization/projects/{project_id}/api_keys`, 404 for an unknown project):
  `organization.project.api_key` objects, owned by a user or a service account.
Key values are never served, only `redacted_value` (`leak_key_values=True` adds a `value` field, as a
response that should not carry one, for tests that check nothing stores it).

Speaks OpenAI's documented wire format, with the behaviour observed on the live API:
- `Authorization: Bearer sk-admin-...` (admin key) or 401 with OpenAI's `{"error": {...}}` body;
- `start_time` (required, inclusive), `end_time` (exclusive), `bucket_width` 1m/1h/1d (costs: 1d only),
  `limit` in buckets (defaults 60/24/7, maxima 1440/168/31; costs 7/180; over the maximum: 400),
  `group_by` in repeated or bracket form, filters `project_ids`, `models`, ...;
- the first bucket starts exactly at `start_time`, later ones on UTC boundaries; empty buckets are kept
  with `results: []`; ungrouped dimensions are null; `object` fields everywhere;
- pages of buckets with `has_more` and an opaque `next_page` (`page_...`), null on the last page;
- completions results with the 2026 field set (`input_uncached_tokens`, `input_cache_write_tokens`...)
  or, with `field_set="2025"`, the older one (`input_tokens` includes cached, no uncached field);
- costs in USD (`amount.value` a number, or a long decimal string with `amount_as_string`, as observed),
  `currency: "usd"`, `line_item` like `"gpt-4o-mini-2024-07-18, cached input"`, and a 400 for
  `group_by=api_key_id` (as the live API answered in July 2026) unless `allow_costs_api_key_group`.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from aiohttp import web

from convergence.devstack.providers.common import (
    WIDTH_SECONDS,
    FixedUsage,
    GeneratedUsage,
    StandInServer,
    UsageRecord,
    UsageSource,
    aggregate,
    day_of,
    decode_cursor,
    encode_cursor,
    iso,
    query_list,
    run_forever,
    usage_source,
)
from convergence.devstack.providers.paging import BadRequest, id_page, page_ends, page_limit

ADMIN_KEY = "sk-admin-standin-0123456789abcdef"
MILLION = Decimal(1_000_000)

COMPLETIONS_DIMENSIONS = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")
EMBEDDINGS_DIMENSIONS = ("project_id", "user_id", "api_key_id", "model")
COSTS_GROUPS = ("project_id", "line_item", "api_key_id")
USAGE_LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}  # (default, max) buckets per page
COSTS_LIMIT = (7, 180)

# The provider's own list prices, USD per 1M tokens: (input, cached input, output). Research section 3.2.
LIST_PRICES: dict[str, tuple[str, str, str]] = {
    "gpt-4o": ("2.50", "1.25", "10.00"),
    "gpt-4o-mini": ("0.15", "0.075", "0.60"),
    "gpt-4.1": ("2.00", "0.50", "8.00"),
    "gpt-4.1-mini": ("0.40", "0.10", "1.60"),
    "gpt-4.1-nano": ("0.10", "0.025", "0.40"),
    "o1": ("15.00", "7.50", "60.00"),
    "o3": ("2.00", "0.50", "8.00"),
    "o3-mini": ("1.10", "0.55", "4.40"),
    "o4-mini": ("1.10", "0.275", "4.40"),
    "gpt-5": ("1.25", "0.125", "10.00"),
    "gpt-5-mini": ("0.25", "0.025", "2.00"),
    "gpt-5-nano": ("0.05", "0.005", "0.40"),
    "text-embedding-3-small": ("0.02", "0.02", "0"),
    "text-embedding-3-large": ("0.13", "0.13", "0"),
}
UNLISTED_PRICE = ("1.00", "0.50", "4.00")  # what the stand-in bills for a model it has no list price for
BATCH_MULTIPLIER = Decimal("0.5")

DEFAULT_MODELS = (
    "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14", "o3-2025-04-16", "o4-mini-2025-04-16", "gpt-5-2025-08-07",
    "gpt-5-mini-2025-08-07", "gpt-5-nano-2025-08-07",
)
DEFAULT_PROJECTS = ("proj_standin_alpha", "proj_standin_beta")
DEFAULT_PROJECT_NAMES = {"proj_standin_alpha": "Stand-in Alpha", "proj_standin_beta": "Stand-in Beta"}
PROJECTS_LIMIT = (20, 100)  # (default, max) projects per page
LIST_LIMIT = (20, 100)  # (default, max) users / API keys per page
DEFAULT_USERS = {"user_standin_ada": "Ada Lovelace", "user_standin_grace": "Grace Hopper"}
DEFAULT_ADMIN_KEYS = {"key_admin_standin": "Stand-in admin key"}
# project -> {key id: (name, owner user id, or None for a service account)}
DEFAULT_PROJECT_KEYS: dict[str, dict[str, tuple[str, str | None]]] = {
    "proj_standin_alpha": {"key_standin_1": ("Alpha backend", "user_standin_ada"),
                           "key_standin_svc": ("Alpha batch jobs", None)},
    "proj_standin_beta": {"key_standin_2": ("Beta prototype", "user_standin_grace")},
}
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def model_base(model: str) -> str:
    return _SNAPSHOT.sub("", model)


def completions_dims(model: str, project_id: str | None = DEFAULT_PROJECTS[0], *, batch: bool = False,
                     service_tier: str = "default", api_key_id: str | None = "key_standin_1",
                     user_id: str | None = None) -> dict[str, Any]:
    return {"project_id": project_id, "user_id": user_id, "api_key_id": api_key_id, "model": model,
            "batch": batch, "service_tier": service_tier}


def completion(when: Any, model: str, *, uncached: int = 0, cached: int = 0, cache_write: int = 0,
               output: int = 0, requests: int = 1, audio_in: int = 0, audio_out: int = 0,
               **dims: Any) -> UsageRecord:
    """One hour of completions usage, for tests' fixed data sets."""
    return UsageRecord.at(when, completions_dims(model, **dims), uncached=uncached, cached=cached,
                          cache_write=cache_write, output=output, audio_in=audio_in, audio_out=audio_out,
                          requests=requests)


def embedding(when: Any, model: str, *, tokens: int, requests: int = 1,
              project_id: str | None = DEFAULT_PROJECTS[0]) -> UsageRecord:
    return UsageRecord.at(when, {"project_id": project_id, "user_id": None, "api_key_id": "key_standin_1",
                                 "model": model}, input_tokens=tokens, requests=requests)


def synthetic_models(count: int) -> list[str]:
    models = list(DEFAULT_MODELS[:count])
    models += [f"gpt-standin-{i:03d}-2025-01-01" for i in range(count - len(models))]
    return models


def generated_completions(seed: int = 42, models: Sequence[str] | int = DEFAULT_MODELS,
                          projects: Sequence[str] = DEFAULT_PROJECTS, density: float = 0.6,
                          with_batch: bool = True) -> GeneratedUsage:
    """Seeded hourly usage for every (project, model[, batch]) combination."""
    models = synthetic_models(models) if isinstance(models, int) else list(models)
    combos = [completions_dims(m, p, batch=b, service_tier="default")
              for p in projects for m in models for b in ((False, True) if with_batch else (False,))]

    def metrics(value: int, combo: Mapping[str, Any]) -> dict[str, int]:
        batch = combo["batch"]
        scale = 4 if batch else 1
        return {
            "uncached": (1_000 + value % 200_000) // scale,
            "cached": ((value >> 18) % 60_000) // scale,
            "cache_write": (value >> 34) % 3_000 if str(combo["model"]).startswith("gpt-5") else 0,
            "output": (100 + (value >> 40) % 40_000) // scale,
            "audio_in": 0, "audio_out": 0,
            "requests": 1 + (value >> 56) % 200,
        }

    return GeneratedUsage(seed, combos, metrics, density=density)


def generated_embeddings(seed: int = 42, projects: Sequence[str] = DEFAULT_PROJECTS) -> GeneratedUsage:
    combos = [{"project_id": p, "user_id": None, "api_key_id": "key_standin_1", "model": m}
              for p in projects for m in ("text-embedding-3-small", "text-embedding-3-large")]
    return GeneratedUsage(seed + 1, combos, lambda v, c: {"input_tokens": 500 + v % 300_000,
                                                          "requests": 1 + (v >> 30) % 50}, density=0.3)


class OpenAIStandIn(StandInServer):
    def __init__(self, *, admin_keys: Sequence[str] = (ADMIN_KEY,),
                 completions: UsageSource | Sequence[UsageRecord] | None = None,
                 embeddings: UsageSource | Sequence[UsageRecord] | None = None,
                 prices: Mapping[str, tuple[str, str, str]] | None = None,
                 cost_adjustments: Mapping[tuple[str, str], Decimal | str] | None = None,
                 extra_costs: Sequence[tuple[str, str | None, str, Decimal | str]] = (),
                 field_set: str = "2026", amount_as_string: bool = False, iso_fields: bool = False,
                 allow_costs_api_key_group: bool = False, projects: Mapping[str, str] | None = None,
                 archived_projects: Sequence[str] = (), users: Mapping[str, str] | None = None,
                 admin_api_keys: Mapping[str, str] | None = None,
                 project_api_keys: Mapping[str, Mapping[str, tuple[str, str | None]]] | None = None,
                 leak_key_values: bool = False, seed: int = 42, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.users = dict(DEFAULT_USERS if users is None else users)  # id -> name
        self.admin_api_keys = dict(DEFAULT_ADMIN_KEYS if admin_api_keys is None else admin_api_keys)
        self.project_api_keys = {p: dict(k) for p, k in
                                 (DEFAULT_PROJECT_KEYS if project_api_keys is None else project_api_keys).items()}
        self.leak_key_values = leak_key_values
        self.projects = dict(DEFAULT_PROJECT_NAMES if projects is None else projects)  # id -> name
        self.archived_projects = frozenset(archived_projects)
        self.admin_keys = frozenset(admin_keys)
        self.completions = usage_source(completions, lambda: generated_completions(seed))
        self.embeddings = usage_source(embeddings, lambda: generated_embeddings(seed) if completions is None
                                       else FixedUsage([]))
        self.prices = {k: tuple(Decimal(x) for x in v) for k, v in {**LIST_PRICES, **(prices or {})}.items()}
        # (day, line_item) -> amount added to that day's line (seeds a billed-vs-calculated difference).
        self.cost_adjustments = {k: Decimal(str(v)) for k, v in (cost_adjustments or {}).items()}
        self.extra_costs = [(d, p, li, Decimal(str(a))) for d, p, li, a in extra_costs]
        if field_set not in ("2025", "2026"):
            raise ValueError("field_set is '2025' or '2026'")
        self.field_set = field_set
        self.amount_as_string = amount_as_string
        self.iso_fields = iso_fields
        self.allow_costs_api_key_group = allow_costs_api_key_group

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/organization/usage/{kind}", self.usage),
            web.get("/v1/organization/costs", self.costs),
            web.get("/v1/organization/projects", self.list_projects),
            web.get("/v1/organization/users", self.list_users),
            web.get("/v1/organization/admin_api_keys", self.list_admin_api_keys),
            web.get("/v1/organization/projects/{project_id}/api_keys", self.list_project_api_keys),
        ]

    # -- errors and auth ---------------------------------------------------------------------------
    def error(self, status: int, message: str, kind: str | None = None, param: str | None = None,
              code: str | None = None) -> web.Response:
        kind = kind or {429: "rate_limit_exceeded", 401: "invalid_request_error"}.get(
            status, "server_error" if status >= 500 else "invalid_request_error")
        return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": code}},
                                 status=status)

    def authorized(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return self.error(401, "You didn't provide an API key. You need to provide your API key in an "
                                   "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        key = header[7:].strip()
        if key in self.admin_keys:
            return None
        masked = f"{key[:8]}{'*' * 20}{key[-4:]}" if len(key) > 16 else "****"
        return self.error(401, f"Incorrect API key provided: {masked}. You can find your API key at "
                               "https://platform.openai.com/account/api-keys.", code="invalid_api_key")

    def malformed_page(self) -> dict[str, Any]:
        # A page whose bucket lost its results array: what a truncated or changed response looks like.
        return {"object": "page", "data": [{"object": "bucket", "start_time": 0}], "has_more": True,
                "next_page": encode_cursor("0")}

    # -- common query handling -----------------------------------------------------------------------
    def _window(self, request: web.Request, limits: Mapping[str, tuple[int, int]]):
        query = request.query
        if "start_time" not in query:
            raise BadRequest(self.error(400, "Missing required parameter: 'start_time'.", param="start_time",
                                  code="missing_required_parameter"))
        try:
            start = int(query["start_time"])
            end = int(query.get("end_time", int(time.time())))
        except ValueError:
            raise BadRequest(self.error(400, "start_time and end_time must be integers (Unix seconds).",
                                  param="start_time")) from None
        width = query.get("bucket_width", "1d")
        if width not in limits:
            raise BadRequest(self.error(400, f"Invalid value for 'bucket_width': {width!r}; expected one of "
                                       f"{', '.join(limits)}.", param="bucket_width"))
        limit = page_limit(query, limits[width], lambda maximum: self.error(
            400, f"Invalid value for 'limit': must be between 1 and {maximum} for bucket_width={width}.",
            param="limit"))
        if end <= start:
            raise BadRequest(self.error(400, "end_time must be after start_time.", param="end_time"))
        cursor = query.get("page")
        first = start
        if cursor:
            decoded = decode_cursor(cursor)
            if decoded is None or not decoded.isdigit() or not start <= int(decoded) <= end:
                raise BadRequest(self.error(400, "Invalid value for 'page'.", param="page"))
            first = int(decoded)
        return start, end, first, WIDTH_SECONDS[width], limit

    @staticmethod
    def _buckets(first: int, end: int, width: int, limit: int) -> tuple[list[tuple[int, int]], int | None]:
        """Up to `limit` buckets from `first` (the first may be unaligned); the next page's start or None."""
        buckets: list[tuple[int, int]] = []
        start = first
        while start < end and len(buckets) < limit:
            stop = min((start // width + 1) * width, end)
            buckets.append((start, stop))
            start = stop
        return buckets, (start if start < end else None)

    def _page(self, buckets: list[dict[str, Any]], next_start: int | None) -> web.Response:
        return web.json_response({
            "object": "page", "data": buckets, "has_more": next_start is not None,
            "next_page": encode_cursor(str(next_start)) if next_start is not None else None,
        })

    def _bucket(self, start: int, end: int, results: list[dict[str, Any]]) -> dict[str, Any]:
        bucket: dict[str, Any] = {"object": "bucket", "start_time": start, "end_time": end, "results": results}
        if self.iso_fields:  # observed undocumented extras, one without a timezone suffix
            bucket["start_time_iso"] = iso(start)
            bucket["end_time_iso"] = iso(end)[:-1]
        return bucket

    # -- usage -------------------------------------------------------------------------------------
    async def usage(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind not in ("completions", "embeddings"):
            return self.error(404, f"Usage endpoint {kind!r} is not served by this stand-in.",
                              code="unknown_url")
        dimensions = COMPLETIONS_DIMENSIONS if kind == "completions" else EMBEDDINGS_DIMENSIONS
        _, end, first, width, limit = self._window(request, USAGE_LIMITS)
        group_by = self._group_by(request, dimensions)
        filters: dict[str, set[Any]] = {}
        for param, dim in (("project_ids", "project_id"), ("user_ids", "user_id"),
                           ("api_key_ids", "api_key_id"), ("models", "model")):
            values = query_list(request, param)
            if values:
                filters[dim] = set(values)
        if kind == "completions" and "batch" in request.query:
            filters["batch"] = {request.query["batch"].lower() == "true"}
        source = self.completions if kind == "completions" else self.embeddings
        spans, next_start = self._buckets(first, end, width, limit)
        buckets = []
        for start, stop in spans:
            # Records are hourly; minute buckets hold each hour's usage in its first minute.
            rows = aggregate(source.records(start, stop), group_by, dimensions, filters)
            buckets.append(self._bucket(start, stop, [self._usage_result(kind, d, m) for d, m in rows]))
        return self._page(buckets, next_start)

    def _group_by(self, request: web.Request, allowed: Sequence[str]) -> list[str]:
        group_by = query_list(request, "group_by")
        for value in group_by:
            if value not in allowed:
                raise BadRequest(self.error(400, f"Invalid value for 'group_by': {value!r}; expected one of "
                                           f"{', '.join(allowed)}.", param="group_by"))
        return list(dict.fromkeys(group_by))

    def _usage_result(self, kind: str, dims: dict[str, Any], m: dict[str, int]) -> dict[str, Any]:
        if kind == "embeddings":
            return {"object": "organization.usage.embeddings.result", "input_tokens": m.get("input_tokens", 0),
                    "num_model_requests": m.get("requests", 0), **dims}
        uncached, cached, write = m.get("uncached", 0), m.get("cached", 0), m.get("cache_write", 0)
        audio_in, audio_out, output = m.get("audio_in", 0), m.get("audio_out", 0), m.get("output", 0)
        result: dict[str, Any] = {"object": "organization.usage.completions.result"}
        if self.field_set == "2025":
            result.update(input_tokens=uncached + cached + write, input_cached_tokens=cached,
                          output_tokens=output, input_audio_tokens=audio_in, output_audio_tokens=audio_out)
        else:
            result.update(
                input_tokens=uncached + cached + write + audio_in, input_cached_tokens=cached,
                input_cache_write_tokens=write, input_uncached_tokens=uncached + audio_in,
                input_text_tokens=uncached + cached + write, output_tokens=output + audio_out,
                output_text_tokens=output, input_cached_text_tokens=cached, input_audio_tokens=audio_in,
                input_cached_audio_tokens=0, output_audio_tokens=audio_out, input_image_tokens=0,
                input_cached_image_tokens=0, output_image_tokens=0,
            )
        result["num_model_requests"] = m.get("requests", 0)
        result.update(dims)
        return result

    # -- costs -------------------------------------------------------------------------------------
    def price(self, model: str) -> tuple[Decimal, Decimal, Decimal]:
        return self.prices.get(model, self.prices.get(model_base(model), tuple(Decimal(x) for x in UNLISTED_PRICE)))  # type: ignore[return-value]

    def billed_lines(self, start: int, end: int) -> dict[tuple[str | None, str], tuple[Decimal, int]]:
        """(project_id, line_item) -> (USD amount, token quantity) for usage in [start, end)."""
        lines: dict[tuple[str | None, str], tuple[Decimal, int]] = {}

        def add(project: str | None, item: str, amount: Decimal, quantity: int) -> None:
            old = lines.get((project, item), (Decimal(0), 0))
            lines[(project, item)] = (old[0] + amount, old[1] + quantity)

        for record in self.completions.records(start, end):
            model, project = record.dims["model"], record.dims.get("project_id")
            p_in, p_cached, p_out = self.price(model)
            multiplier = BATCH_MULTIPLIER if record.dims.get("batch") else Decimal(1)
            m = record.metrics
            fresh = m.get("uncached", 0) + m.get("cache_write", 0) + m.get("audio_in", 0)
            out = m.get("output", 0) + m.get("audio_out", 0)
            add(project, f"{model}, input", fresh * p_in * multiplier / MILLION, fresh)
            if m.get("cached", 0):
                add(project, f"{model}, cached input", m["cached"] * p_cached * multiplier / MILLION, m["cached"])
            add(project, f"{model}, output", out * p_out * multiplier / MILLION, out)
        for record in self.embeddings.records(start, end):
            model = record.dims["model"]
            tokens = record.metrics.get("input_tokens", 0)
            add(record.dims.get("project_id"), f"{model}, input", tokens * self.price(model)[0] / MILLION, tokens)
        day = day_of(start)
        for (adj_day, item), delta in self.cost_adjustments.items():
            if adj_day == day:
                project = next((p for p, i in sorted(lines, key=str) if i == item), None)
                add(project, item, delta, 0)
        for extra_day, project, item, amount in self.extra_costs:
            if extra_day == day:
                add(project, item, amount, 0)
        return lines

    async def costs(self, request: web.Request) -> web.Response:
        _, end, first, width, limit = self._window(request, {"1d": COSTS_LIMIT})
        group_by = self._group_by(request, COSTS_GROUPS)
        if "api_key_id" in group_by and not self.allow_costs_api_key_group:
            # Observed on the live API in July 2026 although OpenAI's API reference lists it.
            return self.error(400, "Invalid value for 'group_by': 'api_key_id' is not supported.", param="group_by")
        project_filter = set(query_list(request, "project_ids"))
        spans, next_start = self._buckets(first, end, width, limit)
        buckets = []
        for start, stop in spans:
            grouped: dict[tuple, tuple[Decimal, int]] = {}
            for (project, item), (amount, quantity) in self.billed_lines(start, stop).items():
                if project_filter and project not in project_filter:
                    continue
                key = (project if "project_id" in group_by else None, item if "line_item" in group_by else None)
                old = grouped.get(key, (Decimal(0), 0))
                grouped[key] = (old[0] + amount, old[1] + quantity)
            results = []
            for (project, item), (amount, quantity) in sorted(grouped.items(), key=lambda kv: str(kv[0])):
                results.append({
                    "object": "organization.costs.result",
                    "amount": {"value": self._amount(amount), "currency": "usd"},
                    "line_item": item, "project_id": project,
                    "quantity": quantity if item is not None and quantity else None,
                    "quantity_unit": "tokens" if item is not None and quantity else None,
                })
            buckets.append(self._bucket(start, stop, results))
        return self._page(buckets, next_start)

    # -- projects (Admin API) ---------------------------------------------------------------------------
    async def list_projects(self, request: web.Request) -> web.Response:
        archived = request.query.get("include_archived", "false").lower() == "true"
        ids = [p for p in sorted(self.projects) if archived or p not in self.archived_projects]

        def item(project: str, n: int) -> dict[str, Any]:
            return {"id": project, "object": "organization.project", "name": self.projects[project],
                    "created_at": 1711471533 + n,
                    "archived_at": 1730419200 if project in self.archived_projects else None,
                    "status": "archived" if project in self.archived_projects else "active"}
        return self._list(request, ids, item, PROJECTS_LIMIT)

    # -- users and API keys (Admin API) ---------------------------------------------------------------
    def _list(self, request: web.Request, ids: Sequence[str], item: Any,
              bounds: tuple[int, int] = LIST_LIMIT) -> web.Response:
        """One `after`-paged page of `ids` as a `list` object (item(id, n) builds each object)."""
        limit = page_limit(request.query, bounds, lambda maximum: self.error(
            400, f"Invalid value for 'limit': must be between 1 and {maximum}.", param="limit"))
        page, more = id_page(ids, limit, lambda: self.error(400, "Invalid value for 'after'.", param="after"),
                             after=request.query.get("after"))
        return web.json_response({"object": "list", "data": [item(i, n) for n, i in enumerate(page)],
                                  **page_ends(page), "has_more": more})

    def _user(self, user_id: str, n: int = 0) -> dict[str, Any]:
        return {"object": "organization.user", "id": user_id, "name": self.users.get(user_id, user_id),
                "email": f"{user_id.removeprefix('user_')}@example.com", "role": "owner" if n == 0 else "reader",
                "added_at": 1711471533 + n}

    @staticmethod
    def _secret(key_id: str) -> str:
        return f"sk-proj-{key_id}-0123456789abcdefSECRET"

    def _redacted(self, key_id: str, admin: bool) -> dict[str, Any]:
        value = f"sk-admin-{key_id}-0123456789abcdefSECRET" if admin else self._secret(key_id)
        out = {"redacted_value": f"{value[:9]}...{value[-4:]}"}
        return {**out, "value": value} if self.leak_key_values else out

    async def list_users(self, request: web.Request) -> web.Response:
        emails = set(query_list(request, "emails"))
        ids = [u for u in sorted(self.users) if not emails or self._user(u)["email"] in emails]
        return self._list(request, ids, self._user)

    async def list_admin_api_keys(self, request: web.Request) -> web.Response:
        order = request.query.get("order", "asc")
        if order not in ("asc", "desc"):
            return self.error(400, "Invalid value for 'order': must be 'asc' or 'desc'.", param="order")
        ids = sorted(self.admin_api_keys, reverse=order == "desc")
        owner = next(iter(sorted(self.users)), "user_standin_owner")

        def item(key_id: str, n: int) -> dict[str, Any]:
            return {"object": "organization.admin_api_key", "id": key_id, "name": self.admin_api_keys[key_id],
                    **self._redacted(key_id, admin=True), "created_at": 1711471533 + n, "expires_at": None,
                    "last_used_at": 1711471534 + n,
                    "owner": {"type": "user", "object": "organization.user", "id": owner,
                              "name": self.users.get(owner, owner), "created_at": 1711471533, "role": "owner"}}
        return self._list(request, ids, item)

    async def list_project_api_keys(self, request: web.Request) -> web.Response:
        project = request.match_info["project_id"]
        if project not in self.projects and project not in self.project_api_keys:
            return self.error(404, f"No such project: {project}", kind="invalid_request_error")
        keys = self.project_api_keys.get(project, {})

        def item(key_id: str, n: int) -> dict[str, Any]:
            name, user = keys[key_id]
            if user is None:
                owner = {"type": "service_account", "service_account": {
                    "id": f"svc_acct_{key_id}", "name": f"{name} (service account)", "created_at": 1711471533,
                    "role": "member"}}
            else:
                owner = {"type": "user", "user": {**{k: v for k, v in self._user(user).items()
                                                      if k in ("id", "name", "email")},
                                                   "role": "owner", "created_at": 1711471533}}
            return {"object": "organization.project.api_key", "id": key_id, "name": name,
                    **self._redacted(key_id, admin=False), "created_at": 1711471533 + n,
                    "last_used_at": 1711471600 + n, "owner": owner}
        return self._list(request, sorted(keys), item)

    def _amount(self, amount: Decimal) -> float | str:
        if self.amount_as_string:  # observed: strings with 39 decimals, and "0E-6176" for zero
            return "0E-6176" if amount == 0 else f"{amount:.39f}"
        return float(amount)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m convergence.devstack.providers.openai_server", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--models", type=int, default=len(DEFAULT_MODELS))
    parser.add_argument("--admin-key", default=ADMIN_KEY)
    args = parser.parse_args(argv)
    run_forever(OpenAIStandIn(admin_keys=(args.admin_key,), completions=generated_completions(args.seed, args.models),
                              seed=args.seed, port=args.port))


if __name__ == "__main__":
    main()
