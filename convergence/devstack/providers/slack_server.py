"""Stand-in for Slack incoming webhooks: `POST /services/T.../B.../<secret>` with a JSON payload.

Answers like Slack: 200 `ok`; 400 `invalid_payload` (not JSON) or `no_text` (neither text nor blocks);
404 `no_service` for an unknown webhook; injected failures (429 with Retry-After, 500) on demand.
Received payloads are kept for the tests (`messages`).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web

from convergence.devstack.providers.common import LoopbackServer


class SlackStandIn(LoopbackServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.hooks: set[str] = set()
        self.messages: list[dict[str, Any]] = []
        self.received: list[tuple[str, dict[str, Any]]] = []  # (webhook path, payload)
        self.requests = 0
        self._failures: list[tuple[int, str | None]] = []

    def webhook(self) -> str:
        """A new webhook URL served here (its path is the secret, as with Slack)."""
        path = f"/services/T{secrets.token_hex(4).upper()}/B{secrets.token_hex(4).upper()}/{secrets.token_urlsafe(18)}"
        self.hooks.add(path)
        return f"{self.base_url}{path}"

    def posted_to(self, webhook_url: str) -> list[dict[str, Any]]:
        """The payloads one webhook received."""
        path = webhook_url.removeprefix(self.base_url)
        return [payload for hook, payload in self.received if hook == path]

    def fail_next(self, status: int = 500, times: int = 1, retry_after: float | None = None) -> None:
        self._failures += [(status, None if retry_after is None else f"{retry_after:g}")] * times

    def app(self) -> web.Application:
        application = web.Application()
        application.add_routes([web.post("/services/{team}/{bot}/{secret}", self._post)])
        return application

    async def _post(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.path not in self.hooks:
            return web.Response(status=404, text="no_service")
        if self._failures:
            status, retry_after = self._failures.pop(0)
            headers = {"Retry-After": retry_after} if retry_after else {}
            return web.Response(status=status, text="rate_limited" if status == 429 else "internal_error",
                                headers=headers)
        try:
            payload = json.loads(await request.text())
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(payload, dict) or not (payload.get("text") or payload.get("blocks")):
            return web.Response(status=400, text="no_text")
        self.messages.append(payload)
        self.received.append((request.path, payload))
        return web.Response(status=200, text="ok")
