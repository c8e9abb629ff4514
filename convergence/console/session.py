"""The console's session: an HMAC-signed token in an HttpOnly, SameSite=Strict cookie.

The token says who signed in (the root key, or one org's key) and until when; it never holds the key.
The per-session CSRF token is an HMAC of the session's nonce, so it needs no server-side state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

ROOT = "*"  # the subject of a root session: every org


@dataclass(frozen=True)
class Session:
    org: str  # an org slug, or ROOT
    expires: int  # Unix seconds
    nonce: str

    @property
    def is_root(self) -> bool:
        return self.org == ROOT


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(self, secret: bytes, ttl_seconds: int = 3600, clock: Callable[[], float] = time.time):
        if len(secret) < 16:
            raise ValueError("session secret must be at least 16 bytes")
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self.clock = clock

    def issue(self, org: str) -> tuple[str, Session]:
        session = Session(org, int(self.clock()) + self.ttl_seconds, secrets.token_urlsafe(16))
        payload = _b64(json.dumps({"o": session.org, "e": session.expires, "n": session.nonce},
                                  separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}", session

    def verify(self, token: str | None) -> Session | None:
        """The session, or None if the token is missing, forged, malformed or expired."""
        if not token or token.count(".") != 1 or len(token) > 1024:
            return None
        payload, signature = token.split(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(str(data["o"]), int(data["e"]), str(data["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > self.clock() else None

    def csrf(self, session: Session) -> str:
        return _b64(hmac.new(self._secret, b"csrf:" + session.nonce.encode(), hashlib.sha256).digest())

    def check_csrf(self, session: Session, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(str(presented).encode(), self.csrf(session).encode())

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, b"session:" + payload.encode(), hashlib.sha256).digest())
