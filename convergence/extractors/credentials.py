"""Where a step's credential comes from, in this order:

1. `context.secrets[provider]` (or its lower-case form): put there by an earlier `integrations.kms_decrypt` step;
2. the org's `org_integration_credentials` row for `provider`, decrypted by KMS (`services.credentials`);
3. `context.secrets[secret_key]`: a secret named directly in the step config.

A credential read from the store is also put into `context.secrets`, so the executor masks it in every
later result, error and event. The value never appears in a result or a log line. Provider names go through
the provider registry (configs/system/providers.yml): `CLAUDE` finds ANTHROPIC's credential. The run
remembers which stored credentials it read (`context.credentials_read`), so a provider's 401 can mark
that credential INVALID.

The one resolver for every ps_type: the API extractors, notifications and the LLM steps call
`resolve_credential`; `integrations.kms_decrypt` and the store step of that order call `stored_credential`.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, PermanentStepError, StepError
from convergence.tenancy.providers import load_registry

log = structlog.get_logger(__name__)
_PROVIDER = re.compile(r"^[A-Z][A-Z0-9_]{1,49}$")


@dataclass(frozen=True)
class ResolvedCredential:
    value: str
    source: str  # "context_secrets" | "org_integration_credentials" | "named_secret"


async def resolve_credential(context: RunContext, provider: str | None = None, secret_key: str | None = None,
                             *, named_first: bool = False) -> ResolvedCredential | None:
    """The credential for `provider`/`secret_key`, or None when neither is configured.

    `named_first`: `context.secrets[secret_key]` is looked at before anything else (the LLM steps name
    the slot their `integrations.kms_decrypt` step filled)."""
    if provider is not None and not _PROVIDER.match(str(provider)):
        raise PermanentStepError(f"auth.provider {provider!r} must be an upper-case provider name such as "
                                 "VENDOR_API", code=ErrorCode.CONFIG_INVALID)
    if not provider and not secret_key:
        return None
    if provider:
        provider = canonical(context, provider)
    secrets = context.secrets
    if named_first and secret_key and secrets.get(secret_key):
        return ResolvedCredential(secrets[secret_key], "named_secret")
    if provider:
        for name in (provider, provider.lower()):
            if secrets.get(name):
                return ResolvedCredential(secrets[name], "context_secrets")
        value = await _from_store(context, provider)
        if value:
            secrets.setdefault(provider.lower(), value)
            return ResolvedCredential(value, "org_integration_credentials")
    if secret_key and secrets.get(secret_key):
        return ResolvedCredential(secrets[secret_key], "named_secret")
    looked = []
    if provider:
        looked += [f"context secrets[{provider!r}]", f"org_integration_credentials ({provider})"]
    if secret_key:
        looked.append(f"context secrets[{secret_key!r}]")
    raise PermanentStepError(f"org {context.org_slug} has no credential: looked in {', '.join(looked)}",
                             code=ErrorCode.CREDENTIAL_NOT_FOUND)


async def stored_credential(context: RunContext, provider: str) -> str:
    """The org's credential for `provider` from the credential store, decrypted (KMS). Errors carry codes
    (CREDENTIAL_NOT_FOUND, CREDENTIAL_DECRYPT_FAILED) and never any key material."""
    store = getattr(context.services, "credentials", None) if context.services is not None else None
    if store is None:
        raise PermanentStepError("no credential store is configured", code=ErrorCode.CREDENTIAL_NOT_FOUND)
    provider = canonical(context, provider)
    context.credentials_read.setdefault(provider, datetime.now(UTC))
    try:
        if inspect.iscoroutinefunction(store.get):
            secret = await store.get(context.org_slug, provider)
        else:
            secret = await asyncio.to_thread(store.get, context.org_slug, provider)
    except StepError:
        raise
    except LookupError:
        raise PermanentStepError(f"org {context.org_slug} has no {provider} credential",
                                 code=ErrorCode.CREDENTIAL_NOT_FOUND) from None
    except Exception as error:  # noqa: BLE001 - never let a decrypt error carry key material out
        log.warning("credential decryption failed", provider=provider, error_type=type(error).__name__)
        raise PermanentStepError(f"could not decrypt the {provider} credential of org {context.org_slug} "
                                 f"({type(error).__name__})", code=ErrorCode.CREDENTIAL_DECRYPT_FAILED) from None
    if not secret:
        raise PermanentStepError(f"org {context.org_slug} has no {provider} credential",
                                 code=ErrorCode.CREDENTIAL_NOT_FOUND)
    return secret


def _registry(context: RunContext) -> Any:
    settings = getattr(context.services, "settings", None) if context.services is not None else None
    return load_registry(getattr(settings, "configs_dir", None))


def canonical(context: RunContext, provider: str) -> str:
    """The registry's name for `provider` (an alias such as CLAUDE gives ANTHROPIC)."""
    return _registry(context).canonical(provider)


async def _from_store(context: RunContext, provider: str) -> str | None:
    try:
        return await stored_credential(context, provider)
    except StepError as error:
        if error.code == ErrorCode.CREDENTIAL_NOT_FOUND:
            return None
        raise
