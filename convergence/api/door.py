"""The HTTP run door: the old API's routes, as a thin layer that publishes run requests.

| route                                                       | key            | answer                       |
|-------------------------------------------------------------|----------------|------------------------------|
| POST /api/v1/pipelines/run/{org}/{provider}/{domain}/{name} | X-API-Key      | 202 {run_id, status: QUEUED} |
| GET  /api/v1/pipelines/runs/{run_id}                        | X-API-Key      | 200 run + steps (that org's) |
| GET  /api/v1/procedures, /procedures/files, /{name}         | X-CA-Root-Key  | 200                          |
| POST /api/v1/procedures/sync, /procedures/{name}            | X-CA-Root-Key  | 200                          |
| DELETE /api/v1/procedures/{name}                            | X-CA-Root-Key  | 200 / 404                    |

The domain may be empty: `/run/acme/anthropic//usage_cost`. Order of checks for a run: X-Request-ID
(format), global rate limit, API key (401 missing/invalid, 403 another org's; none needed for a pipeline
with `requires_auth: false`, though a key presented is verified), per-org rate limit,
body (400 not JSON, 422 invalid or unknown field), pipeline (404), the org gate from a standing cached for
GATE_CACHE_SECONDS (403 with the gate's code, e.g. SUBSCRIPTION_SUSPENDED or PIPELINE_DISABLED; 429 QUOTA_EXCEEDED with
Retry-After at the next UTC midnight), a run_once pipeline that already ran for the org (409 ALREADY_RAN
unless its force_param is set), publish (503 if Pub/Sub refuses).
Nothing is published unless every check passed. Errors are JSON `{"detail", "code", "request_id"}`.

`X-Request-ID` is echoed on every answer; when absent one is made (UUID4). It becomes the run's trace_id,
so the request, the run's log lines, events and run log rows share one id. It must match the run
request's trace_id format: 1-128 characters of A-Z a-z 0-9 _ - . : (else 400).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError
from structlog.contextvars import bound_contextvars

from convergence.api.auth import AuthError, OrgKey, OrgKeyAuth, bigquery_verifier, check_root_key
from convergence.api.errors import ApiErrorCode
from convergence.api.models import EmptyBody, RunBody, SyncBody
from convergence.api.ratelimit import Limits
from convergence.api.standing import DoorGate, DoorOnce, refusal_status, retry_after
from convergence.observability import otel
from convergence.observability.tracing import trace_id_from_headers
from convergence.pipeline import ConfigError, PipelineLoader
from convergence.pipeline.errors import ErrorCode, InvalidPipelineRef, PipelineNotFound, StepError
from convergence.schemas import MessageRejected, RunRequest, Trigger
from convergence.settings import Settings
from convergence.tenancy.gate import ALREADY_RAN

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices

log = structlog.get_logger(__name__)

PREFIX = "/api/v1"
REQUEST_ID = "X-Request-ID"
MAX_BODY_BYTES = 64 * 1024
PUBLISH_TIMEOUT_SECONDS = 30.0
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")  # = the run request's trace_id pattern
REQUEST_ID_KEY = web.RequestKey("request_id", str)
TRACE_ID_KEY = web.RequestKey("trace_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 details: Any = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details


class ApiDoor:
    """Routes of the old HTTP API on the service's aiohttp app (`register`)."""

    def __init__(self, settings: Settings, services: PlatformServices, loader: PipelineLoader | None = None, *,
                 auth: OrgKeyAuth | None = None, limits: Limits | None = None, ledger: Any = None,
                 procedures: Callable[[], Any] | None = None):
        self.settings = settings
        self.services = services
        self.loader = loader or PipelineLoader(settings.configs_dir)
        self.auth = auth or OrgKeyAuth(lambda org, key: bigquery_verifier(services.bigquery, settings)(org, key),
                                       cache_seconds=settings.api_key_cache_seconds)
        self.limits = limits or Limits(settings.rate_limit_enabled, settings.rate_limit_requests_per_minute,
                                       settings.rate_limit_global_requests_per_minute)
        self._ledger = ledger
        self._procedures = procedures
        self.gate = DoorGate(lambda: services.gate, settings.gate_cache_seconds)
        self.once = DoorOnce(lambda: services.gate, settings.gate_cache_seconds)
        self.auth_disabled = settings.disable_auth and not settings.is_production
        if self.auth_disabled:
            log.warning("DISABLE_AUTH: the run door accepts calls without an org API key (never in production)")

    @property
    def ledger(self) -> Any:
        if self._ledger is None:
            from convergence.publisher.ledger import ExecutionLedger

            self._ledger = ExecutionLedger(self.services.bigquery, self.settings)
        return self._ledger

    def procedures(self) -> Any:
        if self._procedures is not None:
            return self._procedures()
        from convergence.processors.sql.procedures import ProcedureCatalog

        return ProcedureCatalog(self.services.bigquery, self.settings)

    def register(self, app: web.Application) -> None:
        r = app.router
        routes = [
            r.add_post(PREFIX + "/pipelines/run/{org}/{provider}/{domain:[^/]*}/{pipeline}", self._wrap(self.run)),
            r.add_get(PREFIX + "/pipelines/runs/{run_id}", self._wrap(self.run_status)),
            r.add_get(PREFIX + "/procedures", self._wrap(self.procedures_list)),
            r.add_get(PREFIX + "/procedures/files", self._wrap(self.procedures_files)),
            r.add_post(PREFIX + "/procedures/sync", self._wrap(self.procedures_sync)),
            r.add_get(PREFIX + "/procedures/{name}", self._wrap(self.procedure_get)),
            r.add_post(PREFIX + "/procedures/{name}", self._wrap(self.procedure_put)),
            r.add_delete(PREFIX + "/procedures/{name}", self._wrap(self.procedure_delete)),
        ]
        for alias, pipeline in TWO_SEGMENT_ALIASES.items():  # the old API's short run URLs
            routes.append(r.add_post(f"{PREFIX}/pipelines/run/{{org}}/{alias}", self._wrap(self._alias(pipeline))))
        if self.settings.cors_origins:
            allow_cors(app, routes, self.settings.cors_origins)

    def _alias(self, pipeline: str) -> Handler:
        provider, domain, name = pipeline.split("/")

        async def run_alias(request: web.Request) -> web.Response:
            request.match_info.update({"provider": provider, "domain": domain, "pipeline": name})
            return await self.run(request)

        return run_alias

    # -- common ------------------------------------------------------------------------------------------
    def _wrap(self, handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            given = request.headers.get(REQUEST_ID)
            valid = given is not None and bool(_REQUEST_ID.match(given))
            request_id = given if valid and given is not None else str(uuid.uuid4())
            request[REQUEST_ID_KEY] = request_id
            # traceparent (Cloud Run, OpenTelemetry callers) wins; else the request id is the trace id.
            request[TRACE_ID_KEY] = trace_id_from_headers(request.headers) or request_id
            with bound_contextvars(request_id=request_id, trace_id=request[TRACE_ID_KEY]), \
                    otel.caller_context(request.headers):  # tracing on: the caller's span parents the publish
                try:
                    if given is not None and not valid:
                        raise ApiError(400, ApiErrorCode.INVALID_REQUEST_ID,
                                       "X-Request-ID must be 1-128 characters of A-Z, a-z, 0-9, _, -, . and :")
                    wait = self.limits.check_global()
                    if wait:
                        raise ApiError(429, ApiErrorCode.RATE_LIMITED, "too many requests to this service; retry later",
                                       {"Retry-After": str(int(wait))})
                    response = await handler(request)
                except ApiError as error:
                    response = self._error(error, request_id)
                except AuthError as error:
                    response = self._error(ApiError(error.status, error.code, error.message), request_id)
                except Exception:  # noqa: BLE001 - never a stack trace to the caller
                    log.exception("api request failed", path=request.path)
                    response = self._error(ApiError(500, ApiErrorCode.INTERNAL_ERROR, "internal error"), request_id)
                if response.status >= 400:
                    log.info("api request refused", method=request.method, path=request.path,
                             status=response.status)
            response.headers[REQUEST_ID] = request_id
            return response

        return wrapped

    @staticmethod
    def _error(error: ApiError, request_id: str) -> web.Response:
        body: dict[str, Any] = {"detail": error.message, "code": error.code, "request_id": request_id}
        if error.details is not None:
            body["errors"] = error.details
        return web.json_response(body, status=error.status, headers=error.headers)

    def _org_limit(self, org_slug: str) -> None:
        wait = self.limits.check_org(org_slug)
        if wait:
            raise ApiError(429, ApiErrorCode.RATE_LIMITED, f"too many requests for org {org_slug}; retry later",
                           {"Retry-After": str(int(wait))})

    async def _org_key(self, request: web.Request, org_slug: str | None) -> OrgKey | None:
        if self.auth_disabled:
            return None
        return await self.auth.authenticate(request.headers.get("X-API-Key"), org_slug)

    @staticmethod
    async def _body(request: web.Request, model: type[BaseModel]) -> Any:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise ApiError(413, ApiErrorCode.BODY_TOO_LARGE, f"request body is larger than {MAX_BODY_BYTES} bytes")
        raw = await request.content.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, ApiErrorCode.BODY_TOO_LARGE, f"request body is larger than {MAX_BODY_BYTES} bytes")
        # Any content type: `curl -d '{...}'` sends JSON as application/x-www-form-urlencoded.
        data = parse_json_body(raw) if raw.strip() else {}
        if not isinstance(data, dict):
            raise ApiError(422, ApiErrorCode.INVALID_BODY, "request body must be a JSON object")
        try:
            return model.model_validate(data)
        except ValidationError as error:
            details = [{"field": ".".join(str(p) for p in item["loc"]) or "(body)",
                        "problem": "unknown field" if item["type"] == "extra_forbidden" else item["msg"]}
                       for item in error.errors()]
            summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])
            raise ApiError(422, ApiErrorCode.INVALID_BODY, summary, details=details) from None

    # -- pipelines ---------------------------------------------------------------------------------------
    async def run(self, request: web.Request) -> web.Response:
        info = request.match_info
        org = info["org"]
        ref = f"{info['provider']}/{info['domain']}/{info['pipeline']}"
        # A pipeline whose YAML says `requires_auth: false` runs without an org key; a key presented is
        # still verified. Any other call without a key gets the 401 before the pipeline is even looked up.
        public = request.headers.get("X-API-Key") is None and not self.auth_disabled and self._public(ref)
        key = None if public else await self._org_key(request, org)
        self._org_limit(org)
        body: RunBody = await self._body(request, RunBody)
        try:
            parameters = body.run_parameters()
        except ValueError as error:
            raise ApiError(422, ApiErrorCode.INVALID_BODY, str(error)) from None
        try:
            config = self.loader.load(ref)
        except (InvalidPipelineRef, PipelineNotFound) as error:
            raise ApiError(404, error.code, str(error).replace(str(self.loader.configs_dir), "configs")) from None
        except ConfigError as error:
            log.error("pipeline config invalid", pipeline=ref, error=str(error)[:500])
            raise ApiError(500, error.code, f"pipeline {ref} has an invalid config") from None
        if config.auth_type == "admin_key":
            check_root_key(self.settings, request.headers.get("X-CA-Root-Key"))
        decision = await self.gate.check(org, ref)
        if decision is not None and not decision.allowed:
            wait = retry_after(decision)
            raise ApiError(refusal_status(decision), decision.code, decision.message,
                           {"Retry-After": str(wait)} if wait else None)
        once = config.execution
        if once.run_once and not once.forced(parameters) and await self.once.ran(org, ref):
            hint = f"; set parameter {once.force_param} to run it again" if once.force_param else ""
            raise ApiError(409, ALREADY_RAN, f"pipeline {ref} runs once per org and already ran for org {org}{hint}")
        requested_by = f"api:{org}:key-{key.fingerprint}" if key else f"api:{org}:no-auth"
        try:
            run_request = RunRequest.create(org, ref, parameters, Trigger(body.trigger), requested_by=requested_by,
                                            trace_id=request[TRACE_ID_KEY])
        except MessageRejected as error:
            raise ApiError(422, error.code.value, str(error)) from None
        try:
            future = self.services.requests.publish_request(run_request)
            await asyncio.wait_for(asyncio.wrap_future(future), PUBLISH_TIMEOUT_SECONDS)
        except Exception as error:  # noqa: BLE001 - the caller may retry: nothing was queued
            log.error("run request not published", error=f"{type(error).__name__}: {error}"[:300])
            raise ApiError(503, ApiErrorCode.PUBLISH_FAILED, "the run request could not be queued; retry later",
                           {"Retry-After": "5"}) from None
        self.gate.queued(org)
        if once.run_once:
            self.once.queued(org, ref)
        try:
            await asyncio.to_thread(self.ledger.record, [run_request])
        except Exception as error:  # noqa: BLE001 - queued anyway; only the QUEUED status lookup misses it
            log.warning("run request not recorded in the queue table", error=str(error)[:300])
        log.info("run request queued", run_id=run_request.run_id, org_slug=org, pipeline=ref,
                 trigger=body.trigger, trace_id=run_request.trace_id)
        location = f"{PREFIX}/pipelines/runs/{run_request.run_id}"
        return web.json_response({
            "run_id": run_request.run_id, "status": "QUEUED", "org_slug": org, "pipeline": ref,
            "trigger": body.trigger, "parameters": dict(run_request.parameters), "trace_id": run_request.trace_id,
            "request_id": request[REQUEST_ID_KEY], "status_url": location,
        }, status=202, headers={"Location": location})

    def _public(self, ref: str) -> bool:
        try:
            return not self.loader.load(ref).requires_auth
        except Exception:  # noqa: BLE001 - not a loadable pipeline: the key is asked for, then the 404
            return False

    async def run_status(self, request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        key = await self._org_key(request, None)
        org = key.org_slug if key else None
        if org is not None:
            self._org_limit(org)
        if not re.fullmatch(r"[A-Za-z0-9_\-:.]{1,200}", run_id):
            raise ApiError(404, ApiErrorCode.RUN_NOT_FOUND, "no such run")
        runlog = self.services.runlog
        record = await asyncio.to_thread(runlog.latest_run, run_id, org)
        if record is not None:
            steps = await asyncio.to_thread(runlog.step_logs, run_id, record.org_slug)
            return web.json_response({**_record(record), "steps": [_step(s) for s in steps]})
        queued = await asyncio.to_thread(self.ledger.lookup, run_id, org) if org else None
        if queued is not None:
            return web.json_response({
                "run_id": run_id, "org_slug": queued["org_slug"], "pipeline": queued["pipeline_id"],
                "status": "QUEUED", "queued_at": _iso(queued["created_at"]), "steps": [],
            })
        raise ApiError(404, ApiErrorCode.RUN_NOT_FOUND, "no such run for this org")

    # -- procedures (X-CA-Root-Key; the same catalog as `convergence procedures`) -------------------------
    async def _catalog_call(self, request: web.Request, call: Callable[[Any], Any]) -> Any:
        check_root_key(self.settings, request.headers.get("X-CA-Root-Key"))

        def work() -> Any:
            return call(self.procedures())

        try:
            return await asyncio.to_thread(work)
        except StepError as error:
            status = 404 if error.code == ErrorCode.PROCEDURE_NOT_FOUND else 400 if not error.retryable else 503
            raise ApiError(status, error.code, str(error)) from None

    async def procedures_list(self, request: web.Request) -> web.Response:
        items = await self._catalog_call(request, lambda c: c.list())
        return web.json_response({"procedures": items, "count": len(items)}, dumps=_dumps)

    async def procedures_files(self, request: web.Request) -> web.Response:
        items = await self._catalog_call(request, lambda c: c.files())
        return web.json_response({"files": items, "count": len(items)}, dumps=_dumps)

    async def procedures_sync(self, request: web.Request) -> web.Response:
        check_root_key(self.settings, request.headers.get("X-CA-Root-Key"))
        body: SyncBody = await self._body(request, SyncBody)
        report = await self._catalog_call(request, lambda c: c.sync(force=body.force))
        return web.json_response(report, status=200 if not report.get("failed") else 500, dumps=_dumps)

    async def procedure_get(self, request: web.Request) -> web.Response:
        name = _procedure_name(request)
        return web.json_response(await self._catalog_call(request, lambda c: c.get(name)), dumps=_dumps)

    async def procedure_put(self, request: web.Request) -> web.Response:
        name = _procedure_name(request)
        check_root_key(self.settings, request.headers.get("X-CA-Root-Key"))
        await self._body(request, EmptyBody)
        return web.json_response(await self._catalog_call(request, lambda c: c.put(name)), dumps=_dumps)

    async def procedure_delete(self, request: web.Request) -> web.Response:
        name = _procedure_name(request)
        deleted = await self._catalog_call(request, lambda c: c.delete(name))
        if not deleted:
            raise ApiError(404, ApiErrorCode.PROCEDURE_NOT_FOUND, f"procedure {name} does not exist")
        return web.json_response({"deleted": name})


MAX_JSON_DEPTH = 32  # a valid body nests 2 deep; the limit keeps the parser far from the recursion limit
# The closing quote is optional so an unterminated string is eaten once: linear time on any input.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


# Two-segment run URLs of the old API, kept as aliases of their four-segment pipelines.
TWO_SEGMENT_ALIASES = {"openai/usage_cost": "openai/cost/usage_cost", "gcp/billing": "gcp/cost/billing"}
CORS_ALLOWED_HEADERS = ("Content-Type", "Authorization", "X-API-Key", "X-CA-Root-Key", "X-Request-ID", "traceparent")
CORS_EXPOSED_HEADERS = ("X-Request-ID", "Retry-After", "Location")


def allow_cors(app: web.Application, routes: list[web.AbstractRoute], origins: list[str]) -> None:
    """CORS on the door's routes for exactly these origins (aiohttp-cors answers the preflights). No
    credentials mode: the door authenticates with headers, never cookies."""
    import aiohttp_cors

    options = aiohttp_cors.ResourceOptions(allow_credentials=False, allow_headers=CORS_ALLOWED_HEADERS,
                                           expose_headers=CORS_EXPOSED_HEADERS, max_age=600)
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in origins})
    for route in routes:
        cors.add(route)


def _json_depth(text: str) -> int:
    depth = deepest = 0
    for char in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:  # parsers disagree on which copy wins: refuse rather than guess
            raise ApiError(400, ApiErrorCode.DUPLICATE_KEY, f"request body repeats the key {key[:40]!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ApiError(400, ApiErrorCode.NON_FINITE_NUMBER, f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as infinity
        raise ApiError(400, ApiErrorCode.NON_FINITE_NUMBER, f"{text[:40]} is too large for a JSON number")
    return value


def parse_json_body(raw: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys, no lone surrogates, nesting at most MAX_JSON_DEPTH.

    The consumer's parser (schemas/strict_json.py) refuses the same things: a body accepted here is never
    rejected there as malformed.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(400, ApiErrorCode.INVALID_JSON,
                       f"request body is not valid UTF-8 (bad byte at offset {error.start})") from None
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise ApiError(400, ApiErrorCode.JSON_TOO_DEEP, f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                          parse_float=_finite_float)
    except json.JSONDecodeError as error:
        raise ApiError(400, ApiErrorCode.INVALID_JSON,
                       f"request body is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})") \
            from None
    except RecursionError:  # not reachable below MAX_JSON_DEPTH; kept so it can never be a 500
        raise ApiError(400, ApiErrorCode.JSON_TOO_DEEP,
                       f"request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as error:  # an integer past Python's digit limit
        raise ApiError(400, ApiErrorCode.INVALID_JSON, f"request body is not valid JSON: {str(error)[:120]}") from None
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # "\ud800": valid JSON text, but no UTF-8 can carry it on to Pub/Sub
        raise ApiError(400, ApiErrorCode.INVALID_JSON,
                       "request body holds a lone UTF-16 surrogate (\\uD800-\\uDFFF)") from None
    return data


def _procedure_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,255}", name):
        raise ApiError(404, ApiErrorCode.PROCEDURE_NOT_FOUND, "no such procedure")
    return name


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


_RUN_FIELDS = ("run_id", "org_slug", "pipeline", "pipeline_id", "status", "trigger", "attempt", "parameters",
               "trace_id", "start_time", "end_time", "duration_ms", "rows_processed", "steps_total", "steps_failed",
               "error_code", "error_message", "delivery_count", "event_time")
_STEP_FIELDS = ("step_id", "ps_type", "step_index", "status", "attempt", "start_time", "end_time", "duration_ms",
                "rows_processed", "error_code", "error_message")


def _record(record: Any) -> dict[str, Any]:
    out = {name: _iso(getattr(record, name)) for name in _RUN_FIELDS}
    out["pipeline_logging_id"] = record.pipeline_logging_id
    return out


def _step(step: Any) -> dict[str, Any]:
    return {name: _iso(getattr(step, name)) for name in _STEP_FIELDS}
