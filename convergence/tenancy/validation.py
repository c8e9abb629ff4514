"""Checking a provider credential with the provider's cheapest authenticated call (the registry's
`validation`), and recording the verdict on the credential row.

VALID: the call succeeded. INVALID: the provider refused the credential (401/403, a token grant refused,
a service-account key that is not one). ERROR: the check itself failed (network, 5xx, an unexpected 4xx):
the credential keeps working for eligibility. The error text is the provider's answer with the secret
masked; it never holds key material.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from convergence.httpclient import RetryPolicy
from convergence.pipeline.errors import ErrorCode, StepError
from convergence.pipeline.redaction import redact
from convergence.pipeline.services import RunServices
from convergence.tenancy.providers import Provider, load_registry

if TYPE_CHECKING:
    from convergence.runtime.services import PlatformServices

log = structlog.get_logger(__name__)

# A check answers a person or one step: two tries, short waits, no minute of retries.
CHECK_POLICY = RetryPolicy(attempts=2, initial_seconds=0.2, max_seconds=2.0, max_retry_after_seconds=5.0)
_REJECTED = (ErrorCode.PROVIDER_AUTH_FAILED, ErrorCode.CREDENTIAL_INVALID)


@dataclass(frozen=True)
class Verdict:
    provider: str
    status: str  # VALID | INVALID | ERROR
    error: str | None = None
    code: str | None = None

    @property
    def valid(self) -> bool:
        return self.status == "VALID"


class UnknownProvider(LookupError):
    code = ErrorCode.PROVIDER_UNKNOWN


def provider_for(settings: Any, name: str) -> Provider:
    registry = load_registry(getattr(settings, "configs_dir", None))
    provider = registry.get(name)
    if provider is None or provider.validation is None:
        known = ", ".join(sorted(n for n, p in registry.providers.items() if p.validation is not None))
        raise UnknownProvider(f"no validation call is defined for provider {str(name)[:60]!r}; known: {known}")
    return provider


async def check_credential(services: RunServices, provider_name: str, secret: str) -> Verdict:
    """One authenticated call to the provider with `secret`. Never raises for the provider's answer."""
    provider = provider_for(services.settings, provider_name)
    try:
        if provider.auth.get("type") == "google_service_account":
            await _check_google(services, provider, secret)
        else:
            await _check_header(services, provider, secret)
    except StepError as error:
        message = redact(str(error), {"secret": secret})
        status = "INVALID" if error.code in _REJECTED else "ERROR"
        log.info("credential check failed", provider=provider.name, status=status, code=str(error.code))
        return Verdict(provider.name, status, message, str(error.code))
    log.info("credential check passed", provider=provider.name)
    return Verdict(provider.name, "VALID")


async def _check_header(services: RunServices, provider: Provider, secret: str) -> None:
    check = provider.validation
    assert check is not None
    client = services.http(provider.name, policy=CHECK_POLICY)
    await client.request_json(check.method, provider.url(services.settings) + check.path,
                              params={k: str(v) for k, v in check.params.items()},
                              headers=provider.auth_headers(secret))


async def _check_google(services: RunServices, provider: Provider, secret: str) -> None:
    from convergence.processors.gcp._auth import ServiceAccountKey, credentials_for

    check = provider.validation
    assert check is not None
    key = ServiceAccountKey.parse(secret)
    # The token exchange itself: a key Google does not know is refused here (PROVIDER_AUTH_FAILED).
    credentials = await credentials_for(key, tuple(sorted(provider.auth["scopes"])), services.settings)
    client = services.http(provider.name, policy=CHECK_POLICY)
    await client.request_json(check.method, provider.url(services.settings) + check.path,
                              params={k: str(v) for k, v in check.params.items()},
                              headers={"Authorization": f"Bearer {credentials.token}"})


async def validate_stored(services: PlatformServices, org_slug: str, provider_name: str) -> Verdict:
    """Check the org's stored credential and record the verdict on its row (one UPDATE)."""
    import asyncio

    store = services.credentials
    stored = await asyncio.to_thread(store.read, org_slug, provider_name)
    verdict = await check_credential(services, provider_name, stored.secret)
    await asyncio.to_thread(store.set_status, org_slug, provider_name, verdict.status, verdict.error)
    return verdict


__all__ = ["CHECK_POLICY", "UnknownProvider", "Verdict", "check_credential", "provider_for", "validate_stored"]
