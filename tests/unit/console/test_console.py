"""`/console` on the `serve` app, on the local stack, in a real headless Chromium driven over the DevTools
protocol (aiohttp's websocket client: no new dependency): sign-in by form, runs, one run's step timeline,
the dead-letter list and its root-only replay, the cost chart drawn by the vendored Chart.js. Org keys see
only their org; the key never lands in a URL, a cookie or a page."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import shutil
import subprocess
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr

from convergence.console import Console
from convergence.console.app import COOKIE, chart_data, cost_query
from convergence.console.session import ROOT, Sessions
from tests.paths import REPO_ROOT

REPO = REPO_ROOT
ROOT_KEY = "root-" + "c" * 40
FOCUS_SCHEMA = "configs/focus/schemas/focus_cost_daily.json"
ORG, OTHER = "acme_console", "other_console"

# ---- unit ----------------------------------------------------------------------------------------------


def test_session_tokens_are_signed_expire_and_carry_no_key():
    now = [1000.0]
    sessions = Sessions(b"s" * 32, ttl_seconds=60, clock=lambda: now[0])
    token, session = sessions.issue("acme")
    assert sessions.verify(token) == session and not session.is_root
    payload, signature = token.split(".")
    assert sessions.verify(payload + "." + signature[:-2] + "AA") is None  # forged signature
    forged_payload = base64.urlsafe_b64encode(json.dumps({"o": ROOT, "e": 99999, "n": "x"}).encode()).decode()
    assert sessions.verify(forged_payload.rstrip("=") + "." + signature) is None  # root claimed, not signed
    assert Sessions(b"t" * 32, clock=lambda: now[0]).verify(token) is None  # another secret
    for junk in (None, "", "a.b.c", "x" * 2000, "!!.??"):
        assert sessions.verify(junk) is None
    assert sessions.check_csrf(session, sessions.csrf(session))
    assert not sessions.check_csrf(session, None) and not sessions.check_csrf(session, "nope")
    other = sessions.issue("acme")[1]
    assert not sessions.check_csrf(other, sessions.csrf(session))  # per session
    now[0] = 1061.0
    assert sessions.verify(token) is None  # expired


def test_chart_data_fills_every_day_and_keeps_currencies_apart():
    start = date(2026, 1, 1)
    rows = [{"day": start, "provider": "OpenAI", "service": "API", "currency": "USD", "effective_cost": 1.5},
            {"day": start + timedelta(days=2), "provider": "OpenAI", "service": "API", "currency": "USD",
             "effective_cost": 2},
            {"day": start, "provider": "DeepSeek", "service": "API", "currency": "CNY", "effective_cost": 7}]
    data = chart_data(rows, start, start + timedelta(days=2))
    assert data["days"] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert [(s["provider"], s["currency"], s["values"]) for s in data["series"]] == [
        ("DeepSeek", "CNY", [7.0, 0.0, 0.0]), ("OpenAI", "USD", [1.5, 0.0, 2.0])]


def test_sign_in_attempts_are_rate_limited_per_client_address():
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from convergence.api.ratelimit import RateLimiter
    from convergence.settings.model import load_settings

    now = [0.0]
    settings = load_settings(ca_root_api_key=ROOT_KEY)
    console = Console(settings, services=None, sign_ins=RateLimiter(2, clock=lambda: now[0]))
    app = web.Application()
    console.register(app)

    async def attempts() -> list[tuple[int, str | None, str]]:
        async with TestClient(TestServer(app)) as client:
            seen = []
            for key in ("wrong", "wrong", ROOT_KEY):
                response = await client.post("/console/login", data={"kind": "root", "key": key},
                                              allow_redirects=False)
                seen.append((response.status, response.headers.get("Retry-After"), await response.text()))
            now[0] = 30.0  # a token back (2 a minute)
            response = await client.post("/console/login", data={"kind": "root", "key": ROOT_KEY},
                                         allow_redirects=False)
            seen.append((response.status, response.headers.get("Location"), ""))
            return seen

    seen = asyncio.run(attempts())
    assert [(status, header) for status, header, _ in seen] == [(403, None), (403, None), (429, "30"),
                                                                (303, "/console/runs")]
    assert "too many sign-in attempts" in seen[2][2]


def test_the_cost_query_passes_googles_sql_analyzer():
    from convergence.warehouse.googlesql import GoogleSql, Statement, TableSchema, index_tables

    analyzer = GoogleSql.shared()
    fields = json.loads((REPO / FOCUS_SCHEMA).read_text())
    tables = index_tables([TableSchema("p-test.acme.focus_cost_daily", fields)])
    parameters = {"org": {"type": "STRING"}, "start_date": {"type": "DATE"}, "end_date": {"type": "DATE"}}
    assert analyzer.check(Statement(cost_query("p-test.acme.focus_cost_daily"), parameters), tables) is None
    # The check is real: the same statement on a column the table lacks is refused.
    broken = cost_query("p-test.acme.focus_cost_daily").replace("`ServiceName`", "`NoSuchColumn`")
    assert analyzer.check(Statement(broken, parameters), tables) is not None


# ---- the server on the local stack ----------------------------------------------------------------------


def dead_letter(platform: Any) -> str:
    """A dead-lettered request, as the consumer's drain records it (with the original body)."""
    from convergence.schemas import RunRequest

    request = RunRequest.create(ORG, "testing/consumer/ok", {"seconds": 0}, "adhoc",
                                run_id=f"run_{uuid.uuid4().hex}", trace_id=uuid.uuid4().hex)
    platform.services.runlog.record_dead_lettered(run_id=request.run_id, org_slug=ORG, delivery_count=5,
                                                  message="gave up <b>after</b> 5", pipeline=request.pipeline,
                                                  trigger="adhoc", request_json=request.to_json().decode())
    return request.run_id


@pytest.fixture(scope="module")
def stack(local_stack, tmp_path_factory):
    from convergence.consumer.serving import build_push_app
    from convergence.runtime import Services
    from convergence.warehouse.writer import Writer
    from tests.harness import Platform
    from tests.unit.api.test_http_door import Server
    from tests.unit.commands.test_cli_costs import focus_row

    platform = Platform(local_stack, tmp_path_factory.mktemp("console"))
    platform.keys = {org: platform.onboard(org).api_key for org in (ORG, OTHER)}
    platform.start_consumer()
    runs = {"ok": platform.publish(ORG, "testing/consumer/ok", {"seconds": 0}),
            "failed": platform.publish(ORG, "testing/consumer/permanent"),
            "other": platform.publish(OTHER, "testing/consumer/ok", {"seconds": 0})}
    for name, status in (("ok", "SUCCESS"), ("failed", "FAILED"), ("other", "SUCCESS")):
        platform.run_record(runs[name], status=status)
    runs["dead"] = dead_letter(platform)
    today = datetime.now(UTC).date()
    focus = [focus_row(ORG, today, "OpenAI", "OpenAI API", "gpt-4o", "1.25"),
             focus_row(ORG, today - timedelta(days=1), "OpenAI", "OpenAI API", "gpt-4o", "0.75"),
             focus_row(ORG, today - timedelta(days=3), "Anthropic", "Claude API", "claude-sonnet-4", "2.50"),
             focus_row(ORG, today - timedelta(days=50), "Anthropic", "Claude API", "claude-sonnet-4", "9.00"),
             focus_row(ORG, today, "Anthropic", "Claude API", "claude-sonnet-4", "0.50")]
    Writer(platform.services.bigquery, platform.settings).write(platform.settings.org_dataset(ORG),
                                                                "focus_cost_daily", focus, schema_path=FOCUS_SCHEMA)
    settings = platform.settings.model_copy(update={"push_verify_token": False,
                                                    "ca_root_api_key": SecretStr(ROOT_KEY)})
    services = Services(settings)
    app = build_push_app(settings, services)
    Console(settings, services).register(app)
    server = Server(app)
    platform.runs = runs
    platform.server = server
    yield platform
    server.close()
    services.close()
    platform.close()


def call(stack, method: str, path: str, cookie: str | None = None, form: dict | None = None,
         headers: dict | None = None) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.server.port, timeout=30)
    sent = dict(headers or {})
    if cookie:
        sent["Cookie"] = f"{COOKIE}={cookie}"
    body = None
    if form is not None:
        body = urlencode(form)
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    connection.request(method, path, body=body, headers=sent)
    response = connection.getresponse()
    text = response.read().decode()
    result = response.status, {k.lower(): v for k, v in response.getheaders()}, text
    connection.close()
    return result


def sign_in(stack, kind: str, key: str) -> str:
    status, headers, _ = call(stack, "POST", "/console/login", form={"kind": kind, "key": key})
    assert status == 303 and headers["location"] == "/console/runs", (status, headers)
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert key not in cookie
    return cookie.split(";")[0].split("=", 1)[1]


def cost_data(page: str) -> dict:
    return json.loads(page.split('id="cost-data">', 1)[1].split("</script>", 1)[0])


def totals(data: dict) -> dict:
    return {(s["provider"], s["service"]): round(sum(s["values"]), 6) for s in data["series"]}


def csrf_of(page: str) -> str:
    marker = 'name="csrf" value="'
    return page.split(marker, 1)[1].split('"', 1)[0]


@pytest.mark.emulator
def test_sign_in_and_what_an_org_key_may_see(stack):
    assert call(stack, "GET", "/console/runs")[:2][0] == 303  # not signed in: to the form
    status, _, page = call(stack, "POST", "/console/login", form={"kind": "org", "key": ORG + "_api_" + "x" * 16})
    assert status == 401 and "invalid" in page
    status, _, page = call(stack, "POST", "/console/login", form={"kind": "root", "key": "wrong"})
    assert status == 403 and "wrong" not in page
    assert call(stack, "GET", "/console/runs", cookie="forged.token")[0] == 303

    org = sign_in(stack, "org", stack.keys[ORG])
    status, _, page = call(stack, "GET", "/console/runs", cookie=org)
    assert status == 200
    assert stack.runs["ok"] in page and stack.runs["failed"] in page and stack.runs["other"] not in page
    assert stack.keys[ORG] not in page
    status, _, page = call(stack, "GET", "/console/runs?status=FAILED", cookie=org)
    assert stack.runs["failed"] in page and stack.runs["ok"] not in page
    assert call(stack, "GET", f"/console/runs?org={OTHER}", cookie=org)[0] == 403
    assert call(stack, "GET", "/console/runs?since=soon", cookie=org)[0] == 400
    assert call(stack, "GET", "/console/runs?status=BOGUS", cookie=org)[0] == 400
    # another org's run: the same 404 as an unknown run, with or without ?org=
    assert call(stack, "GET", f"/console/runs/{stack.runs['other']}", cookie=org)[0] == 404
    assert call(stack, "GET", f"/console/runs/{stack.runs['other']}?org={OTHER}", cookie=org)[0] == 404
    status, _, page = call(stack, "GET", f"/console/runs/{stack.runs['failed']}", cookie=org)
    assert status == 200 and 'data-step="extract"' in page and "FAILED" in page

    status, _, page = call(stack, "GET", "/console/dlq", cookie=org)
    assert status == 200 and stack.runs["dead"] in page
    assert "gave up &lt;b&gt;after&lt;/b&gt; 5" in page  # escaped
    assert 'class="replay"' not in page  # no replay button for an org key
    refused = call(stack, "POST", "/console/dlq/replay", cookie=org,
                   form={"csrf": csrf_of(page), "run_id": stack.runs["dead"], "org": ORG})
    assert refused[0] == 403 and "only the root key" in refused[2]
    assert call(stack, "GET", f"/console/dlq?org={OTHER}", cookie=org)[0] == 403

    assert call(stack, "GET", "/console/costs?days=7", cookie=org)[0] == 400
    status, _, page = call(stack, "GET", "/console/costs", cookie=org)
    assert status == 200 and 'id="cost-chart"' in page
    data = cost_data(page)  # 50 days ago: not in the last 30
    assert len(data["days"]) == 30 and totals(data) == {("Anthropic", "Claude API"): 3.0, ("OpenAI", "OpenAI API"): 2.0}

    root = sign_in(stack, "root", ROOT_KEY)
    status, _, page = call(stack, "GET", "/console/runs", cookie=root)
    assert stack.runs["other"] in page and stack.runs["ok"] in page
    assert call(stack, "GET", f"/console/runs/{stack.runs['other']}", cookie=root)[0] == 200
    status, _, page = call(stack, "GET", "/console/costs", cookie=root)  # root picks the org in the form
    assert status == 200 and "Say which org" in page and 'id="cost-chart"' not in page
    status, _, page = call(stack, "GET", f"/console/costs?org={ORG}&days=90", cookie=root)
    assert status == 200 and totals(cost_data(page))[("Anthropic", "Claude API")] == 12.0

    status, _, page = call(stack, "GET", "/console/static/../app.py")
    assert status == 404
    assert call(stack, "GET", "/console/static/chart-4.4.1.umd.min.js")[0] == 200


@pytest.mark.emulator
def test_replay_needs_the_root_session_and_its_csrf_token(stack):
    root = sign_in(stack, "root", ROOT_KEY)
    page = call(stack, "GET", "/console/dlq", cookie=root)[2]
    assert 'class="replay"' in page and stack.runs["dead"] in page
    form = {"run_id": stack.runs["dead"], "org": ORG}
    assert call(stack, "POST", "/console/dlq/replay", cookie=root, form=form)[0] == 403  # no csrf
    other_session = sign_in(stack, "root", ROOT_KEY)
    stale = csrf_of(call(stack, "GET", "/console/dlq", cookie=other_session)[2])
    assert call(stack, "POST", "/console/dlq/replay", cookie=root, form={**form, "csrf": stale})[0] == 403
    cross = call(stack, "POST", "/console/dlq/replay", cookie=root, form={**form, "csrf": csrf_of(page)},
                 headers={"Origin": "http://evil.example"})
    assert cross[0] == 403
    assert stack.follower.of(stack.runs["dead"]) == []  # nothing refused was published

    status, headers, _ = call(stack, "POST", "/console/dlq/replay", cookie=root, form={**form, "csrf": csrf_of(page)})
    assert status == 303 and "replayed=" in headers["location"]
    events = stack.follower.wait_for(stack.runs["dead"], "pipeline_completed")
    assert events[-1]["status"] == "SUCCESS"
    again = call(stack, "POST", "/console/dlq/replay", cookie=root, form={**form, "csrf": csrf_of(page)})
    assert again[0] == 404 and "not dead-lettered" in again[2]


# ---- in headless Chromium -------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")


class Browser:
    """Chromium over the DevTools protocol: one page per isolated browser context (its own cookies)."""

    def __init__(self, profile: Path):
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.ws_url = ""
        for line in self.process.stderr:  # Chromium prints its DevTools address once it listens
            if line.startswith("DevTools listening on "):
                self.ws_url = line.split(" on ", 1)[1].strip()
                break
        if not self.ws_url:
            raise RuntimeError("chromium did not start its DevTools endpoint")
        self.process.stderr.close()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)


class Page:
    def __init__(self, cdp: Cdp, session_id: str):
        self.cdp, self.session_id = cdp, session_id

    @classmethod
    async def open(cls, cdp: Cdp) -> Page:
        context = (await cdp.send("Target.createBrowserContext"))["browserContextId"]
        target = (await cdp.send("Target.createTarget", url="about:blank", browserContextId=context))["targetId"]
        session = (await cdp.send("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
        page = cls(cdp, session)
        await page.send("Page.enable")
        await page.send("Page.setLifecycleEventsEnabled", enabled=True)
        await page.send("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1,
                        mobile=False)
        return page

    async def send(self, method: str, **params: Any) -> dict:
        return await self.cdp.send(method, session_id=self.session_id, **params)

    async def _loaded(self, loader: str, since: int) -> None:
        await self.cdp.wait(self.session_id, since, "Page.lifecycleEvent",
                            lambda p: p["name"] == "load" and p["loaderId"] == loader)

    async def goto(self, url: str) -> None:
        since = self.cdp.mark()
        await self._loaded((await self.send("Page.navigate", url=url))["loaderId"], since)

    async def submit(self, script: str) -> None:
        """Run a script that submits a form, and wait for the page it leads to (after redirects)."""
        since = self.cdp.mark()
        await self.eval(script)
        navigated = await self.cdp.wait(self.session_id, since, "Page.frameNavigated",
                                        lambda p: "parentId" not in p["frame"] and p["frame"]["url"] != "about:blank")
        await self._loaded(navigated["frame"]["loaderId"], since)

    async def eval(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(result["exceptionDetails"])
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))


class Cdp:
    """Commands and their replies by id; every event kept, so a wait never misses one that came early."""

    def __init__(self, ws: Any):
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.events: list[dict] = []
        self.arrived = asyncio.Condition()
        self.reader = asyncio.ensure_future(self._read())

    def mark(self) -> int:
        return len(self.events)

    async def wait(self, session_id: str, since: int, method: str, match: Any) -> dict:
        async def found() -> dict:
            seen = since
            async with self.arrived:
                while True:
                    for event in self.events[seen:]:
                        if event.get("sessionId") == session_id and event.get("method") == method \
                                and match(event["params"]):
                            return event["params"]
                    seen = len(self.events)
                    await self.arrived.wait()

        return await asyncio.wait_for(found(), 30)

    async def send(self, method: str, session_id: str | None = None, **params: Any) -> dict:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        message = {"id": self.next_id, "method": method, "params": params}
        if session_id:
            message["sessionId"] = session_id
        await self.ws.send_json(message)
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def _read(self) -> None:
        async for frame in self.ws:
            message = json.loads(frame.data)
            if "id" in message and message["id"] in self.pending:
                self.pending.pop(message["id"]).set_result(message)
                continue
            async with self.arrived:
                self.events.append(message)
                self.arrived.notify_all()


async def in_browser(browser: Browser, steps: Any) -> Any:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.ws_connect(browser.ws_url, max_msg_size=0) as ws:
        cdp = Cdp(ws)
        try:
            return await steps(cdp)
        finally:
            cdp.reader.cancel()


NO_CHROMIUM = "chromium is not installed (Debian package chromium: `make test` as root installs it)"


@pytest.fixture
def browser(tmp_path):
    browser = Browser(tmp_path / "profile")
    yield browser
    browser.close()


@pytest.mark.emulator
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_pages_in_chromium(stack, browser, tmp_path):
    """CONSOLE_SCREENSHOTS=docs writes the screenshots the README shows (else they stay in tmp_path)."""
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    base = f"http://127.0.0.1:{stack.server.port}"
    dead = dead_letter(stack)
    login = ("(function (kind, key) { document.querySelector('select[name=kind]').value = kind;"
             " document.querySelector('input[name=key]').value = key;"
             " document.getElementById('login').submit(); })")

    async def steps(cdp: Cdp) -> dict:
        seen: dict[str, Any] = {}
        org = await Page.open(cdp)
        await org.goto(base + "/console")
        seen["login_url"] = await org.eval("location.pathname")
        await org.submit(f"{login}('org', {json.dumps(stack.keys[ORG])})")
        seen["after_login"] = await org.eval("location.href")
        seen["runs"] = await org.eval("[...document.querySelectorAll('tr.run')].map(r => r.dataset.runId)")
        seen["cookie_visible"] = await org.eval("document.cookie")  # HttpOnly: scripts never see it
        await org.goto(f"{base}/console/runs/{stack.runs['ok']}")
        seen["bars"] = await org.eval("[...document.querySelectorAll('#gantt rect')].map(r => r.dataset.step)")
        await org.screenshot(shots / "console-run.png")
        await org.goto(f"{base}/console/runs/{stack.runs['other']}")
        seen["other_run"] = await org.eval("document.getElementById('message').textContent")
        await org.goto(f"{base}/console/dlq")
        seen["org_dead"] = await org.eval("[...document.querySelectorAll('tr.dead')].map(r => r.dataset.runId)")
        seen["org_replay_buttons"] = await org.eval("document.querySelectorAll('button.replay').length")
        await org.goto(f"{base}/console/costs?days=30")
        seen["chart"] = await org.eval("(c => c && Object.assign({}, c.dataset, {w: c.width, h: c.height}))"
                                       "(document.getElementById('cost-chart'))")
        await org.screenshot(shots / "console.png")

        root = await Page.open(cdp)
        await root.goto(base + "/console/login")
        await root.submit(f"{login}('root', {json.dumps(ROOT_KEY)})")
        seen["root_runs"] = await root.eval("[...document.querySelectorAll('tr.run')].map(r => r.dataset.org)")
        await root.goto(f"{base}/console/runs/{stack.runs['other']}")
        seen["root_other_run"] = await root.eval("document.title")
        await root.goto(f"{base}/console/dlq")
        seen["root_replay"] = await root.eval(
            "[...document.querySelectorAll('tr.dead')].filter(r => r.querySelector('button.replay'))"
            ".map(r => r.dataset.runId)")
        return seen

    seen = asyncio.run(in_browser(browser, steps))
    assert seen["login_url"] == "/console/login"
    assert seen["after_login"] == f"{base}/console/runs" and stack.keys[ORG] not in seen["after_login"]
    assert stack.runs["ok"] in seen["runs"] and stack.runs["other"] not in seen["runs"]
    assert seen["cookie_visible"] == ""
    assert seen["bars"] == ["first", "second"]
    assert seen["other_run"] == f"no run {stack.runs['other']}"
    assert dead in seen["org_dead"] and seen["org_replay_buttons"] == 0
    # Chart.js drew 2 series (OpenAI, Anthropic) with bars on the 4 (series, day) cells that have cost.
    assert seen["chart"]["chartReady"] == "1" and seen["chart"]["datasets"] == "2"
    assert seen["chart"]["barsDrawn"] == "4" and seen["chart"]["w"] > 0
    assert {ORG, OTHER} <= set(seen["root_runs"])
    for name in ("console.png", "console-run.png"):
        assert (shots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen["root_other_run"].startswith(f"Run {stack.runs['other']}")
    assert dead in seen["root_replay"]


@pytest.mark.emulator
def test_convergence_serve_registers_the_console(stack, monkeypatch):
    from click.testing import CliRunner

    from convergence.commands.serve import serve

    served = []

    async def run_server(app, host, port):
        served.append({route.resource.canonical for route in app.router.routes() if route.resource})

    settings = stack.settings.model_copy(update={"push_verify_token": False, "ca_root_api_key": SecretStr(ROOT_KEY)})
    monkeypatch.setattr("convergence.cli.load_settings_or_exit", lambda: settings)
    monkeypatch.setattr("convergence.consumer.http_app.run_server", run_server)
    result = CliRunner().invoke(serve, [])
    assert result.exit_code == 0, result.output
    assert {"/console/login", "/console/runs", "/console/runs/{run_id}", "/console/dlq/replay",
            "/console/costs", "/api/v1/pipelines/runs/{run_id}"} <= served[0]
