"""Stand-in for the DeepSeek API: the account balance and chat completions that spend it.

DeepSeek has no usage or billing history endpoint; what it serves, as documented (docs/deepseek.md):
- `Authorization: Bearer sk-...` on every call, or 401 "Authentication Fails"; errors in the OpenAI
  shape `{"error": {"message", "type", "param", "code"}}`;
- `GET /user/balance`: `{"is_available", "balance_infos": [{"currency", "total_balance",
  "granted_balance", "topped_up_balance"}]}`, amounts as decimal strings with two places;
- `POST /chat/completions` (also under `/v1`): an OpenAI-shaped completion whose `usage` carries
  `prompt_tokens` (= `prompt_cache_hit_tokens` + `prompt_cache_miss_tokens`), `completion_tokens`,
  `total_tokens` and `completion_tokens_details.reasoning_tokens`; its cost (tokens x price) is
  deducted from the granted balance first, then the topped-up one; 402 "Insufficient Balance" when
  the account has nothing left.

The stand-in's own simplifications: a token is a whitespace-separated word; a message prefix already
seen by the account is a cache hit; the completion is `max_tokens` words (default 16).
Tests move the account with `top_up`, `grant` and `spend`.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from aiohttp import web

from convergence.devstack.providers.common import StandInServer, run_forever

API_KEY = "sk-standin-deepseek-0123456789abcdef"
MILLION = Decimal(1_000_000)
CENT = Decimal("0.01")
# USD per 1M tokens (cache hit input, cache miss input, output); docs/deepseek.md has the sources.
PRICES: dict[str, tuple[Decimal, Decimal, Decimal]] = {
    "deepseek-chat": (Decimal("0.028"), Decimal("0.28"), Decimal("0.42")),
    "deepseek-reasoner": (Decimal("0.028"), Decimal("0.28"), Decimal("0.42")),
}


@dataclass
class Wallet:
    granted: Decimal = Decimal(0)
    topped_up: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        return self.granted + self.topped_up


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


class DeepSeekStandIn(StandInServer):
    logged_headers = ("user-agent", "accept")

    def __init__(self, api_keys: Sequence[str] = (API_KEY,), currency: str = "USD", granted: str | Decimal = "0",
                 topped_up: str | Decimal = "0", host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.api_keys = set(api_keys)
        self.wallets: dict[str, Wallet] = {currency: Wallet(Decimal(granted), Decimal(topped_up))}
        self.available_override: bool | None = None
        self._seen_prefixes: set[str] = set()

    # -- the account, moved by tests ----------------------------------------------------------------
    def wallet(self, currency: str = "USD") -> Wallet:
        return self.wallets.setdefault(currency, Wallet())

    def top_up(self, amount: str | Decimal, currency: str = "USD") -> None:
        self.wallet(currency).topped_up += Decimal(amount)

    def grant(self, amount: str | Decimal, currency: str = "USD") -> None:
        self.wallet(currency).granted += Decimal(amount)

    def spend(self, amount: str | Decimal, currency: str = "USD") -> None:
        """Deduct like DeepSeek: the granted balance first, then the topped-up balance."""
        wallet = self.wallet(currency)
        amount = Decimal(amount)
        from_granted = min(wallet.granted, amount)
        wallet.granted -= from_granted
        wallet.topped_up -= amount - from_granted

    # -- serving ---------------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.get("/user/balance", self.balance), web.post("/chat/completions", self.chat),
                web.post("/v1/chat/completions", self.chat)]

    def error(self, status: int, message: str, kind: str | None = None) -> web.Response:
        kinds = {400: "invalid_request_error", 401: "authentication_error", 402: "invalid_request_error",
                 422: "invalid_request_error", 429: "rate_limit_error"}
        return web.json_response({"error": {"message": message, "type": kind or kinds.get(status, "api_error"),
                                             "param": None, "code": "invalid_request_error"}}, status=status)

    def authorized(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or header[7:] not in self.api_keys:
            return self.error(401, "Authentication Fails, Your api key is invalid")
        return None

    def malformed_page(self) -> dict[str, Any]:
        return {"is_available": "yes", "balance_infos": [{"currency": "USD", "total_balance": 12.5}]}

    async def balance(self, request: web.Request) -> web.Response:
        infos = [{"currency": currency, "total_balance": _money(w.total), "granted_balance": _money(w.granted),
                  "topped_up_balance": _money(w.topped_up)} for currency, w in self.wallets.items()]
        available = any(w.total > 0 for w in self.wallets.values())
        if self.available_override is not None:
            available = self.available_override
        return web.json_response({"is_available": available, "balance_infos": infos})

    async def chat(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except ValueError:
            return self.error(400, "Invalid request body format: not JSON")
        if not isinstance(body, Mapping):
            return self.error(400, "Invalid request body format")
        model = body.get("model")
        messages = body.get("messages")
        if model not in PRICES:
            return self.error(400, f"Model Not Exist: {model!r}")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, Mapping) and isinstance(m.get("content"), str) for m in messages):
            return self.error(422, "messages must be a non-empty list of {role, content}")
        max_tokens = body.get("max_tokens", 16)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 65536:
            return self.error(422, "max_tokens must be an integer between 1 and 65536")
        if self.wallet().total <= 0:
            return self.error(402, "Insufficient Balance")
        hit = miss = 0
        prefix = ""
        for message in messages:
            prefix += f"{message.get('role')}\x00{message['content']}\x01"
            tokens = max(1, len(message["content"].split()))
            if prefix in self._seen_prefixes:
                hit += tokens
            else:
                miss += tokens
                self._seen_prefixes.add(prefix)
        completion = max_tokens
        reasoning = completion // 2 if model == "deepseek-reasoner" else 0
        hit_price, miss_price, out_price = PRICES[model]
        self.spend((hit * hit_price + miss * miss_price + completion * out_price) / MILLION)
        usage = {"prompt_tokens": hit + miss, "completion_tokens": completion, "total_tokens": hit + miss + completion,
                 "prompt_tokens_details": {"cached_tokens": hit}, "prompt_cache_hit_tokens": hit,
                 "prompt_cache_miss_tokens": miss}
        if reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        message = {"role": "assistant", "content": " ".join(["word"] * (completion - reasoning))}
        if reasoning:
            message["reasoning_content"] = " ".join(["thought"] * reasoning)
        return web.json_response({
            "id": str(uuid.uuid4()), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "length"}],
            "usage": usage, "system_fingerprint": "fp_standin",
        })


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m convergence.devstack.providers.deepseek_server",
                                     description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=API_KEY)
    parser.add_argument("--topped-up", default="50.00")
    parser.add_argument("--granted", default="10.00")
    args = parser.parse_args(argv)
    run_forever(DeepSeekStandIn(api_keys=(args.api_key,), topped_up=args.topped_up, granted=args.granted,
                                port=args.port))


if __name__ == "__main__":
    main()
