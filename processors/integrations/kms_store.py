"""ps_type `integrations.kms_store`: encrypt the credential handed to the run and store it as the org's
credential for a provider (org_integration_credentials, one MERGE; status PENDING until validated).

The credential comes from `context.secrets[secret_name]` only, never from run parameters: parameters
travel in Pub/Sub messages and are kept in the run log. `convergence credentials set` (stdin or a hidden
prompt) and in-process callers put it there. It stays in `context.secrets` for the steps that follow
(a `<provider>.validation` step), so the executor masks it in every result, error and event.

Config:
  provider     provider name or alias of configs/system/providers.yml (CLAUDE is stored as ANTHROPIC)
  secret_name  key in context.secrets that holds the credential (default: credential)
  credential_name  optional label
"""

from __future__ import annotations

import asyncio
import re

import structlog

from convergence.extractors.credentials import canonical
from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, PermanentStepError
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.tenancy.credentials import fingerprint

log = structlog.get_logger(__name__)
_PROVIDER = re.compile(r"^[A-Z][A-Z0-9_]{1,49}$")
_SECRET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class KmsStore:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        raw = str(config.get("provider") or "")
        if not _PROVIDER.match(raw):
            raise PermanentStepError(f"provider {raw!r} must be an upper-case provider name such as OPENAI",
                                     code=ErrorCode.INVALID_PARAMETERS)
        provider = canonical(context, raw)
        slot = str(config.get("secret_name") or "credential")
        if not _SECRET_NAME.match(slot):
            raise PermanentStepError(f"secret_name {slot!r} must be snake_case", code=ErrorCode.INVALID_PARAMETERS)
        secret = context.secrets.get(slot)
        if not secret:
            raise PermanentStepError(
                f"no credential in the run context ({slot!r}): a credential is handed over by "
                "`convergence credentials set` or an in-process caller, never in run parameters",
                code=ErrorCode.CREDENTIAL_NOT_FOUND)
        store = getattr(context.services, "credentials", None) if context.services is not None else None
        if store is None:
            raise PermanentStepError("no credential store is configured", code=ErrorCode.CREDENTIAL_NOT_FOUND)
        credential_id = await asyncio.to_thread(store.put, context.org_slug, provider, secret,
                                                credential_name=config.get("credential_name"))
        # The next step validates this very credential: the value is already here, no decrypt needed.
        context.secrets[provider.lower()] = secret
        context.credentials_read.pop(provider, None)
        log.info("credential stored by the run", provider=provider)
        return {"status": "SUCCESS", "rows_processed": 1, "provider": provider, "credential_id": credential_id,
                "fingerprint": fingerprint(secret), "secret_name": provider.lower()}


def get_engine() -> KmsStore:
    return KmsStore()
