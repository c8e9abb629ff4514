"""`/console`: a read-only web page on `convergence serve` (runs, one run's steps, dead letters, cost per day).

| route                      | who                    | what                                                 |
|----------------------------|------------------------|------------------------------------------------------|
| GET/POST /console/login    | anyone                 | the form; POST checks the key, sets the session      |
| POST /console/logout       | a session (+ csrf)     | clears the cookie                                    |
| GET /console/runs          | root, or an org key    | RunLog.list_runs (org, status, pipeline, since)      |
| GET /console/runs/{run_id} | root, or the run's org | the run and its steps as a timeline (404 otherwise)  |
| GET /console/dlq           | root, or an org key    | dead-lettered runs (what `convergence dlq list` reads)|
| POST /console/dlq/replay   | root (+ csrf)          | republishes one (what `convergence dlq replay` does) |
| GET /console/costs         | root, or an org key    | SUM(EffectiveCost) per day, provider and service     |

Browsers send no custom header on navigation, so the key is posted once to the login form; the answer
sets an HttpOnly, SameSite=Strict cookie with a signed token (org or root, expiry), never the key. An org
session is pinned to its org: another org in `?org=` is refused, and every query is filtered by org
through a query parameter. POSTs need the session's CSRF token and, when the browser sends one, an Origin
of this host.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import structlog
from aiohttp import web

from convergence.api.auth import AuthError, OrgKeyAuth, bigquery_verifier, check_root_key
from convergence.api.ratelimit import RateLimiter
from convergence.console import views
from convergence.console.session import ROOT, Session, Sessions
from convergence.settings import Settings
from convergence.warehouse.identifiers import InvalidIdentifier, validate_org_slug

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices

log = structlog.get_logger(__name__)

COOKIE = "convergence_console"
STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
SESSION_KEY = web.RequestKey("console_session", Session)
FORM_KEY = web.RequestKey("console_form", dict)
MAX_FORM_BYTES = 8 * 1024
LIST_LIMIT = 200
COST_PERIODS = (30, 90)
SIGN_INS_PER_MINUTE = 20  # per client address: guessing keys through the form stays slow
# same-origin, not no-referrer: under no-referrer browsers post forms with `Origin: null`, refused here.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadInput(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def cost_query(table: str) -> str:
    """EffectiveCost per day, provider, service (and currency: amounts in two currencies never add up)."""
    return (
        "SELECT `x_ChargeDate` AS `day`, `ServiceProviderName` AS `provider`, `ServiceName` AS `service`, "  # noqa: S608
        "`BillingCurrency` AS `currency`, SUM(`EffectiveCost`) AS `effective_cost` "
        f"FROM `{table}` WHERE `x_OrgSlug` = @org AND `x_ChargeDate` BETWEEN @start_date AND @end_date "
        "GROUP BY `day`, `provider`, `service`, `currency` ORDER BY `day`, `provider`, `service`, `currency`"
    )


def chart_data(rows: list[dict[str, Any]], start: date, end: date) -> dict[str, Any]:
    """One series per (provider, service, currency), one value per day from start to end (0 where none)."""
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    index = {d: i for i, d in enumerate(days)}
    series: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        key = (row["provider"] or "(none)", row["service"] or "(none)", row["currency"] or "")
        values = series.setdefault(key, [0.0] * len(days))
        day = row["day"]
        if day in index:
            values[index[day]] += float(row["effective_cost"] or 0)
    return {"days": [d.isoformat() for d in days],
            "series": [{"provider": p, "service": s, "currency": c, "values": [round(v, 6) for v in values]}
                       for (p, s, c), values in sorted(series.items())]}


def see_other(location: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=303, headers={**(headers or {}), "Location": location})


def session_secret(settings: Settings) -> bytes:
    """Derived from the root key, so every instance of the service accepts every instance's sessions; with
    no root key, a random one (sessions last as long as the process)."""
    root = settings.ca_root_api_key.get_secret_value() if settings.ca_root_api_key else ""
    if not root:
        return secrets.token_bytes(32)
    return hmac.new(root.encode(), b"convergence-console-session-v1", hashlib.sha256).digest()


class Console:
    def __init__(self, settings: Settings, services: PlatformServices, *, auth: OrgKeyAuth | None = None,
                 sessions: Sessions | None = None, sign_ins: RateLimiter | None = None):
        self.settings = settings
        self.services = services
        self.auth = auth or OrgKeyAuth(lambda org, key: bigquery_verifier(services.bigquery, settings)(org, key),
                                       cache_seconds=settings.api_key_cache_seconds)
        self.sessions = sessions or Sessions(session_secret(settings))
        self.sign_ins = sign_ins or RateLimiter(SIGN_INS_PER_MINUTE)

    def register(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/console", self._redirect_home)
        r.add_get("/console/", self._redirect_home)
        r.add_get("/console/login", self._wrap(self.login_form, signed_in=False))
        r.add_post("/console/login", self._wrap(self.login, signed_in=False))
        r.add_post("/console/logout", self._wrap(self.logout, csrf=True))
        r.add_get("/console/runs", self._wrap(self.runs))
        r.add_get("/console/runs/{run_id}", self._wrap(self.run_detail))
        r.add_get("/console/dlq", self._wrap(self.dlq))
        r.add_post("/console/dlq/replay", self._wrap(self.replay, csrf=True))
        r.add_get("/console/costs", self._wrap(self.costs))
        r.add_get("/console/static/{name}", self.static)

    # -- common ------------------------------------------------------------------------------------------
    def _wrap(self, handler: Handler, *, signed_in: bool = True, csrf: bool = False) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = self.sessions.verify(request.cookies.get(COOKIE))
            try:
                if request.method == "POST":
                    self._check_origin(request)
                if signed_in:
                    if session is None:
                        if request.method == "GET":
                            return see_other("/console/login", HEADERS)
                        raise BadInput(401, "not signed in (or the session expired): sign in again")
                    request[SESSION_KEY] = session
                if csrf and session is not None:
                    form = await self._form(request)
                    if not self.sessions.check_csrf(session, form.get("csrf")):
                        raise BadInput(403, "the form's CSRF token is missing or wrong: reload the page")
                response = await handler(request)
            except BadInput as error:
                response = self._html(views.message("Refused", error.message, session, self._csrf(session)),
                                      error.status)
            except Exception:  # noqa: BLE001 - never a stack trace to the browser
                log.exception("console request failed", path=request.path)
                response = self._html(views.message("Error", "internal error", session, self._csrf(session)), 500)
            response.headers.update(HEADERS)
            return response

        return wrapped

    def _csrf(self, session: Session | None) -> str:
        return self.sessions.csrf(session) if session is not None else ""

    @staticmethod
    def _check_origin(request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null" and origin.split("://", 1)[-1] != request.host:
            raise BadInput(403, "this form was posted from another site")
        if origin == "null":
            raise BadInput(403, "this form was posted from another site")

    @staticmethod
    async def _form(request: web.Request) -> dict[str, str]:
        cached = request.get(FORM_KEY)
        if cached is not None:
            return cached
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            raise BadInput(413, f"form larger than {MAX_FORM_BYTES} bytes")
        raw = await request.content.read(MAX_FORM_BYTES + 1)
        if len(raw) > MAX_FORM_BYTES:
            raise BadInput(413, f"form larger than {MAX_FORM_BYTES} bytes")
        try:
            form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise BadInput(400, "form is not UTF-8") from None
        request[FORM_KEY] = form
        return form

    @staticmethod
    def _html(text: str, status: int = 200) -> web.Response:
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")

    @staticmethod
    def _org(request: web.Request, *, required: bool = False) -> str | None:
        """The org the page is about: an org session's own (another is refused), or root's choice."""
        session = request[SESSION_KEY]
        asked = request.query.get("org", "").strip() or None
        if asked is not None:
            try:
                asked = validate_org_slug(asked)
            except InvalidIdentifier as error:
                raise BadInput(400, str(error)) from None
        if not session.is_root:
            if asked is not None and asked != session.org:
                raise BadInput(403, f"this session is for org {session.org}, not {asked}")
            return session.org
        if required and asked is None:
            raise BadInput(400, "say which org: ?org=ORG_SLUG")
        return asked

    @staticmethod
    def _since(value: str | None) -> datetime | None:
        from convergence.commands.dlq import parse_since

        if not value:
            return None
        try:
            return parse_since(value)
        except Exception:  # noqa: BLE001 - click.BadParameter: the message says what to type
            raise BadInput(400, f"since {value!r}: use 24h, 7d, 30m or an ISO date/time") from None

    async def _redirect_home(self, request: web.Request) -> web.StreamResponse:
        signed_in = self.sessions.verify(request.cookies.get(COOKIE)) is not None
        return see_other("/console/runs" if signed_in else "/console/login", HEADERS)

    # -- sign in -----------------------------------------------------------------------------------------
    async def login_form(self, request: web.Request) -> web.Response:
        return self._html(views.login())

    async def login(self, request: web.Request) -> web.StreamResponse:
        wait = self.sign_ins.take(request.remote or "unknown")
        if wait:
            response = self._html(views.login(f"too many sign-in attempts: retry in {int(wait)} s"), 429)
            response.headers["Retry-After"] = str(int(wait))
            return response
        form = await self._form(request)
        kind, key = form.get("kind", "org"), form.get("key", "").strip()
        try:
            if kind == "root":
                check_root_key(self.settings, key)
                subject = ROOT
            elif kind == "org":
                subject = (await self.auth.authenticate(key)).org_slug
            else:
                raise BadInput(400, "kind must be org or root")
        except AuthError as error:
            log.info("console sign-in refused", kind=kind, code=error.code)  # never the key
            return self._html(views.login(error.message), 401 if error.status == 401 else 403)
        token, session = self.sessions.issue(subject)
        log.info("console sign-in", org=subject)
        response = see_other("/console/runs")
        response.set_cookie(COOKIE, token, max_age=self.sessions.ttl_seconds, path="/console", httponly=True,
                            samesite="Strict", secure=self._secure(request))
        return response

    @staticmethod
    def _secure(request: web.Request) -> bool:
        return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = see_other("/console/login")
        response.del_cookie(COOKIE, path="/console")
        return response

    # -- pages -------------------------------------------------------------------------------------------
    async def runs(self, request: web.Request) -> web.Response:
        from convergence.pipeline.results import RunStatus

        session = request[SESSION_KEY]
        org = self._org(request)
        q = request.query
        status = q.get("status", "").strip().upper() or None
        if status is not None and status not in RunStatus.__members__:
            raise BadInput(400, f"status must be one of {', '.join(RunStatus.__members__)}")
        pipeline = q.get("pipeline", "").strip() or None
        if pipeline is not None and len(pipeline) > 300:
            raise BadInput(400, "pipeline is at most 300 characters")
        since_text = q.get("since", "").strip() or None
        since = self._since(since_text)
        records = await asyncio.to_thread(self.services.runlog.list_runs, org_slug=org, status=status, since=since,
                                          limit=LIST_LIMIT, pipeline=pipeline)
        return self._html(views.runs(session, self._csrf(session), records, org=org, status=status,
                                     pipeline=pipeline, since=since_text))

    async def run_detail(self, request: web.Request) -> web.Response:
        session = request[SESSION_KEY]
        run_id = request.match_info["run_id"]
        if len(run_id) > 200:
            raise BadInput(400, "run id is at most 200 characters")
        try:
            org = self._org(request)
        except BadInput:
            if session.is_root:
                raise
            org = None  # an org session asking for another org's run: the same 404 as an unknown run
        record = None
        if org is not None or session.is_root:
            record = await asyncio.to_thread(self.services.runlog.latest_run, run_id, org)
        if record is None:
            return self._html(views.message("Not found", f"no run {run_id}", session, self._csrf(session)), 404)
        steps = await asyncio.to_thread(self.services.runlog.step_logs, run_id, record.org_slug)
        return self._html(views.run_detail(session, self._csrf(session), record, steps))

    async def dlq(self, request: web.Request) -> web.Response:
        from convergence.commands.dlq import dead_lettered

        session = request[SESSION_KEY]
        org = self._org(request)
        since_text = request.query.get("since", "").strip() or None
        items = await asyncio.to_thread(dead_lettered, self.services.runlog, org_slug=org,
                                        since=self._since(since_text), limit=LIST_LIMIT)
        notice = request.query.get("replayed")
        notice = f"replayed {notice}" if notice else None
        return self._html(views.dead_letters(session, self._csrf(session), items, org=org, since=since_text,
                                             notice=notice))

    async def replay(self, request: web.Request) -> web.StreamResponse:
        from convergence.commands.dlq import dead_lettered, replay

        session = request[SESSION_KEY]
        if not session.is_root:
            raise BadInput(403, "only the root key can replay dead-lettered runs")
        form = await self._form(request)
        run_id = form.get("run_id", "").strip()
        try:
            org = validate_org_slug(form.get("org", "").strip())
        except InvalidIdentifier as error:
            raise BadInput(400, str(error)) from None
        if not run_id or len(run_id) > 200:
            raise BadInput(400, "say which run: run_id (at most 200 characters)")
        items = await asyncio.to_thread(dead_lettered, self.services.runlog, org_slug=org, run_ids=[run_id],
                                        limit=1)
        if not items:
            raise BadInput(404, f"{run_id} is not dead-lettered (unknown, or replayed already)")
        replayed, skipped = await asyncio.to_thread(replay, self.services.requests, items)
        if skipped:
            raise BadInput(409, f"{run_id} not replayed: {skipped.get(run_id, 'refused')}")
        log.info("console replay", run_id=run_id, org=org)
        return see_other("/console/dlq?" + urlencode({"org": org, "replayed": replayed[0]}))

    async def costs(self, request: web.Request) -> web.Response:
        from google.api_core import exceptions

        from convergence.warehouse.query import QueryRunner

        session = request[SESSION_KEY]
        try:
            days = int(request.query.get("days", "30"))
        except ValueError:
            days = 0
        if days not in COST_PERIODS:
            raise BadInput(400, "days must be 30 or 90")
        end = datetime.now(UTC).date()
        start = end - timedelta(days=days - 1)
        org = self._org(request)
        if org is None:
            return self._html(views.costs(session, self._csrf(session), org=None, days=days, start=start, end=end,
                                          chart=None, note="Say which org to show."))
        client = self.services.bigquery
        table = f"{client.project}.{self.settings.org_dataset(org)}.focus_cost_daily"

        def query() -> list[dict[str, Any]]:
            return QueryRunner(client, self.settings).rows(cost_query(table),
                                                           {"org": org, "start_date": start, "end_date": end})
        try:
            rows = await asyncio.to_thread(query)
        except exceptions.NotFound:
            return self._html(views.costs(session, self._csrf(session), org=org, days=days, start=start, end=end,
                                          chart=None, note=f"org {org} has no FOCUS table yet"))
        chart = chart_data([dict(row) for row in rows], start, end)
        note = None if chart["series"] else f"no cost for org {org} from {start} to {end}"
        return self._html(views.costs(session, self._csrf(session), org=org, days=days, start=start, end=end,
                                      chart=chart if chart["series"] else None, note=note))

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = STATIC_DIR / name
        kind = STATIC_TYPES.get(path.suffix)
        # Only files that sit in static/ itself: no path from the URL reaches elsewhere.
        if kind is None or "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), headers={"Content-Type": kind, **HEADERS,
                                                             "Cache-Control": "public, max-age=3600"})
