"""Slack incoming webhooks: POST a JSON payload; Slack answers 200 `ok`. 429 and 5xx are retried a few
times (Retry-After honoured up to a few seconds). The URL is a secret: it never appears in errors or logs,
and it passes the SSRF guard like every outbound call: checked before sending, and again by the session's
resolver on the address actually connected to. A webhook never needs a redirect, so none is followed."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from convergence.httpclient import AddressGuard, BlockedAddress
from convergence.httpclient.client import parse_retry_after
from convergence.notifications.email import NotificationError

ATTEMPTS = 3
MAX_WAIT_SECONDS = 5.0


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}"  # the path of a webhook URL is its secret


class SlackSender:
    def __init__(self, settings: Any, resolver: Any = None, ssl_context: Any = None):
        self.settings = settings
        # Tests only: the lookups under the guard's check, and the CA a stand-in's certificate is signed by.
        self.resolver = resolver
        self.connector_options = {"ssl": ssl_context} if ssl_context is not None else None
        self.guard = AddressGuard(enabled=settings.is_production,
                                  allowed_hosts=frozenset(settings.outbound_allowed_hosts))

    async def send(self, webhook_url: str, payload: dict[str, Any]) -> None:
        if not webhook_url:
            raise NotificationError("no Slack webhook configured")
        try:
            await self.guard.check(webhook_url)
        except BlockedAddress as error:
            raise NotificationError(f"Slack webhook refused: {error}") from None
        timeout = aiohttp.ClientTimeout(total=15, connect=5)
        last = ""
        async with self.guard.session(timeout=timeout, base_resolver=self.resolver,
                                      connector_options=self.connector_options) as session:
            for attempt in range(1, ATTEMPTS + 1):
                wait = 0.2 * 2 ** (attempt - 1)
                try:
                    async with session.post(webhook_url, json=payload, allow_redirects=False) as response:
                        if 300 <= response.status < 400:
                            # The Location is not quoted: it may carry the webhook's secret path onwards.
                            raise NotificationError(f"Slack webhook at {_where(webhook_url)} answered a redirect "
                                                    f"(HTTP {response.status}); redirects are refused")
                        body = (await response.text())[:200]
                        if response.status == 200:
                            return
                        last = f"HTTP {response.status} {body}"
                        if response.status != 429 and response.status < 500:
                            break  # 4xx (invalid_payload, no_service, ...) will not get better
                        wait = min(parse_retry_after(response.headers.get("Retry-After")) or wait, MAX_WAIT_SECONDS)
                except BlockedAddress as error:
                    raise NotificationError(f"Slack webhook refused: {error}") from None
                except (aiohttp.ClientError, TimeoutError) as error:
                    last = f"{type(error).__name__}"
                if attempt < ATTEMPTS:
                    await asyncio.sleep(wait)
        raise NotificationError(f"Slack webhook at {_where(webhook_url)} failed: {last}")
