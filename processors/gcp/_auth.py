"""A customer's GCP service account (credential provider GCP_SA): its key JSON, OAuth2 access tokens from
google-auth, and BigQuery credentials for the source side of the dual-client copy.

The token URI is the one in the key file, so tests reach a local token server. A tenant supplies that
key, so in production the token URI must be Google's (or an allow-listed host) and pass the SSRF guard:
otherwise a crafted key could make the service POST to the metadata server or an internal host.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from convergence.extractors.auth import Auth
from convergence.extractors.request import PageRequest
from convergence.httpclient import AddressGuard
from convergence.pipeline.errors import ErrorCode, PermanentStepError, TransientStepError

GOOGLE_TOKEN_HOSTS = frozenset({"oauth2.googleapis.com", "accounts.google.com", "www.googleapis.com"})
SCOPE_CLOUD_PLATFORM_READ = "https://www.googleapis.com/auth/cloud-platform.read-only"
SCOPE_BIGQUERY_READ = "https://www.googleapis.com/auth/bigquery.readonly"
_REQUIRED = ("type", "client_email", "private_key", "token_uri")


@dataclass(frozen=True)
class ServiceAccountKey:
    info: dict[str, Any]

    @classmethod
    def parse(cls, text: str | dict[str, Any]) -> ServiceAccountKey:
        """Checked key JSON; errors never quote the key."""
        try:
            info = json.loads(text) if isinstance(text, str) else dict(text)
        except ValueError:
            raise PermanentStepError("the GCP service-account credential is not valid JSON",
                                     code=ErrorCode.CREDENTIAL_INVALID) from None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise PermanentStepError("the GCP credential is not a service-account key (type service_account)",
                                     code=ErrorCode.CREDENTIAL_INVALID)
        missing = [k for k in _REQUIRED if not info.get(k)]
        if missing:
            raise PermanentStepError(f"the GCP service-account key lacks {', '.join(missing)}",
                                     code=ErrorCode.CREDENTIAL_INVALID)
        return cls(info)

    @property
    def project_id(self) -> str | None:
        return self.info.get("project_id")

    @property
    def client_email(self) -> str:
        return str(self.info["client_email"])

    @property
    def token_uri(self) -> str:
        return str(self.info["token_uri"])

    @property
    def fingerprint(self) -> str:
        material = f"{self.client_email}|{self.info.get('private_key_id')}|{self.info['private_key']}"
        return hashlib.sha256(material.encode()).hexdigest()[:32]


async def check_token_uri(key: ServiceAccountKey, settings: Any) -> None:
    parts = urlsplit(key.token_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentStepError("the service-account key's token_uri is not an http(s) URL",
                                 code=ErrorCode.CREDENTIAL_INVALID)
    if not settings.is_production:
        return
    host = parts.hostname.lower()
    allowed = frozenset(h.lower() for h in settings.outbound_allowed_hosts)
    if host not in GOOGLE_TOKEN_HOSTS and host not in allowed:
        raise PermanentStepError(f"the service-account key's token_uri host {host} is not Google's token "
                                 "endpoint; refused", code=ErrorCode.BLOCKED_ADDRESS)
    await AddressGuard(enabled=True, allowed_hosts=allowed).check(key.token_uri)


class _CredentialCache:
    """google-auth credentials per (key, scopes): one token is reused across runs until it expires."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._items: OrderedDict[tuple[str, tuple[str, ...]], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: ServiceAccountKey, scopes: tuple[str, ...]) -> Any:
        from google.oauth2 import service_account

        cache_key = (key.fingerprint, scopes)
        with self._lock:
            found = self._items.get(cache_key)
            if found is not None:
                self._items.move_to_end(cache_key)
                return found
        try:
            credentials = service_account.Credentials.from_service_account_info(key.info, scopes=list(scopes))
        except (ValueError, KeyError) as error:
            raise PermanentStepError(f"the GCP service-account key cannot be used ({type(error).__name__})",
                                     code=ErrorCode.CREDENTIAL_INVALID) from None
        with self._lock:
            self._items[cache_key] = credentials
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return credentials


CREDENTIALS = _CredentialCache()


def _no_redirect_request() -> Any:
    """google-auth's requests transport with redirects refused: a token endpoint answers directly, and a
    redirect would carry the signed assertion to a host the guard never saw. No DNS rebinding check is
    needed here: in production the host is Google's or allow-listed (check_token_uri), never tenant DNS."""
    from google.auth.transport.requests import Request

    class NoRedirectRequest(Request):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            kwargs["allow_redirects"] = False
            return super().__call__(*args, **kwargs)

    return NoRedirectRequest()


def _refresh(credentials: Any) -> None:
    from google.auth import exceptions

    try:
        credentials.refresh(_no_redirect_request())
    except exceptions.RefreshError as error:
        reason = str(error.args[0]) if error.args else "refused"
        raise PermanentStepError(f"GCP token request refused for the service account: {reason[:200]}",
                                 code=ErrorCode.PROVIDER_AUTH_FAILED) from None
    except exceptions.TransportError as error:
        raise TransientStepError(f"GCP token endpoint unreachable: {type(error).__name__}",
                                 code=ErrorCode.PROVIDER_NETWORK_ERROR) from None


async def credentials_for(key: ServiceAccountKey, scopes: tuple[str, ...], settings: Any,
                          refresh: bool = True) -> Any:
    """google-auth credentials for the key (token fetched now unless `refresh` is False)."""
    await check_token_uri(key, settings)
    credentials = CREDENTIALS.get(key, tuple(sorted(scopes)))
    if refresh and not credentials.valid:
        await asyncio.to_thread(_refresh, credentials)
    return credentials


class GoogleServiceAccountAuth(Auth):
    """Bearer auth with an OAuth2 access token of the service account, refreshed before it expires."""

    type = "google_service_account"

    def __init__(self, key: ServiceAccountKey, scopes: tuple[str, ...], settings: Any):
        self.key = key
        self.scopes = scopes
        self.settings = settings
        self.credentials: Any = None
        self.token_fetches = 0

    async def prepare(self) -> None:
        if self.credentials is None:
            self.credentials = await credentials_for(self.key, self.scopes, self.settings, refresh=False)
        if not self.credentials.valid:  # valid = has a token that is not about to expire
            await asyncio.to_thread(_refresh, self.credentials)
            self.token_fetches += 1

    def apply(self, request: PageRequest) -> None:
        request.headers["Authorization"] = f"Bearer {self.credentials.token}"

    def secret_values(self) -> list[str]:
        return [self.credentials.token] if self.credentials is not None and self.credentials.token else []
