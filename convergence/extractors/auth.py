"""Auth classes behind one interface: each one puts a credential on a request, and nothing else.

| type     | what it sets                                   | config keys                          |
|----------|------------------------------------------------|--------------------------------------|
| `bearer` | `Authorization: Bearer <token>`                | -                                    |
| `header` | `<header_name>: <prefix><key>`                 | `header_name` (X-API-Key), `prefix`  |
| `query`  | `?<param_name>=<key>`                          | `param_name` (api_key)               |
| `basic`  | `Authorization: Basic base64(user:password)`   | `username` (else from the secret)    |
| `none`   | nothing                                        | -                                    |

The credential itself comes from `extractors.credentials.resolve_credential` (never from the config).
Auth is applied to a copy of each request just before it is sent, so an OAuth token refreshed by
`prepare()` reaches every page, and a `link` paginator's next URL never carries a stale query key.
"""

from __future__ import annotations

import base64
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from convergence.extractors.request import PageRequest
from convergence.pipeline.errors import ErrorCode, PermanentStepError, invalid

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
_PARAM_NAME = re.compile(r"^[A-Za-z0-9_.\-\[\]]{1,100}$")
# Headers a config may not take over with `header` auth: they would break or redirect the request.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "cookie"})



class Auth(ABC):
    type: ClassVar[str]

    @classmethod
    def from_config(cls, spec: Mapping[str, Any], secret: str) -> Auth:
        """The auth for a step's `auth:` block (its `type` chose this class) and the resolved credential.
        Auth that needs more than a secret (a service-account key) is built by its processor instead."""
        raise NotImplementedError(f"{cls.__name__} is not configured from an auth: block")

    async def prepare(self) -> None:
        """Called before every request; token-based auth refreshes an expiring token here."""
        return None

    @abstractmethod
    def apply(self, request: PageRequest) -> None: ...

    def secret_values(self) -> list[str]:
        """Values to mask in errors and results."""
        return []


class NoAuth(Auth):
    type = "none"

    @classmethod
    def from_config(cls, spec: Mapping[str, Any], secret: str) -> NoAuth:
        return cls()

    def apply(self, request: PageRequest) -> None:
        return None


class BearerAuth(Auth):
    type = "bearer"

    def __init__(self, token: str):
        if not token or any(c in token for c in "\r\n"):
            raise PermanentStepError("bearer token is empty or malformed", code=ErrorCode.CREDENTIAL_INVALID)
        self.token = token

    @classmethod
    def from_config(cls, spec: Mapping[str, Any], secret: str) -> BearerAuth:
        return cls(secret)

    def apply(self, request: PageRequest) -> None:
        request.headers["Authorization"] = f"Bearer {self.token}"

    def secret_values(self) -> list[str]:
        return [self.token]


class HeaderAuth(Auth):
    type = "header"

    def __init__(self, key: str, header_name: str = "X-API-Key", prefix: str = ""):
        if not _HEADER_NAME.match(header_name) or header_name.lower() in _RESERVED_HEADERS:
            raise invalid(f"auth.header_name {header_name!r} is not an allowed HTTP header name")
        if not key or any(c in key + prefix for c in "\r\n"):
            raise PermanentStepError("API key is empty or malformed", code=ErrorCode.CREDENTIAL_INVALID)
        self.key = key
        self.header_name = header_name
        self.prefix = prefix

    @classmethod
    def from_config(cls, spec: Mapping[str, Any], secret: str) -> HeaderAuth:
        return cls(secret, str(spec.get("header_name") or "X-API-Key"), str(spec.get("prefix") or ""))

    def apply(self, request: PageRequest) -> None:
        request.headers[self.header_name] = f"{self.prefix}{self.key}"

    def secret_values(self) -> list[str]:
        return [self.key]


class QueryAuth(Auth):
    type = "query"

    def __init__(self, key: str, param_name: str = "api_key"):
        if not _PARAM_NAME.match(param_name):
            raise invalid(f"auth.param_name {param_name!r} is not a valid query parameter name")
        if not key:
            raise PermanentStepError("API key is empty", code=ErrorCode.CREDENTIAL_INVALID)
        self.key = key
        self.param_name = param_name

    @classmethod
    def from_config(cls, spec: Mapping[str, Any], secret: str) -> QueryAuth:
        return cls(secret, str(spec.get("param_name") or "api_key"))

    def apply(self, request: PageRequest) -> None:
        request.params[self.param_name] = self.key

    def secret_values(self) -> list[str]:
        return [self.key]


class BasicAuth(Auth):
    type = "basic"

    def __init__(self, username: str, password: str):
        if not username or ":" in username:
            raise PermanentStepError("basic auth username is empty or contains ':'", code=ErrorCode.CREDENTIAL_INVALID)
        self.username = username
        self.password = password
        self._value = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")

    @classmethod
    def from_config(cls, spec: Mapping[str, Any], secret: str) -> BasicAuth:
        """The secret is `{"username": .., "password": ..}`, `user:password`, or the password alone when
        the config names the username."""
        return _basic_from_secret(secret, spec.get("username"))

    def apply(self, request: PageRequest) -> None:
        request.headers["Authorization"] = f"Basic {self._value}"

    def secret_values(self) -> list[str]:
        return [self.password, self._value]


def _basic_from_secret(secret: str, username: str | None) -> BasicAuth:
    """A basic-auth secret is `{"username": .., "password": ..}`, `user:password`, or the password alone
    when the config names the username."""
    text = secret.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise PermanentStepError("basic auth secret is not valid JSON", code=ErrorCode.CREDENTIAL_INVALID) from None
        return BasicAuth(str(username or data.get("username") or ""), str(data.get("password") or ""))
    if username:
        return BasicAuth(username, secret)
    user, sep, password = secret.partition(":")
    if not sep:
        raise PermanentStepError("basic auth needs `username` in the config or a secret 'user:password'",
                                 code=ErrorCode.CREDENTIAL_INVALID)
    return BasicAuth(user, password)


# `auth.type` -> class; each class reads its own keys in `from_config`.
AUTHS: dict[str, type[Auth]] = {cls.type: cls for cls in (BearerAuth, HeaderAuth, QueryAuth, BasicAuth, NoAuth)}
AUTH_TYPES = tuple(AUTHS)


def build_auth(spec: Mapping[str, Any] | None, secret: str | None) -> Auth:
    """The Auth for a step's `auth:` block and its resolved credential."""
    spec = dict(spec or {})
    kind = str(spec.get("type") or "none").lower()
    if kind not in AUTHS:
        raise invalid(f"auth.type {kind!r} is not one of {', '.join(AUTH_TYPES)}")
    if kind != "none" and not secret:
        raise PermanentStepError(f"auth type {kind} needs a credential and none was found",
                                 code=ErrorCode.CREDENTIAL_NOT_FOUND)
    return AUTHS[kind].from_config(spec, secret or "")
