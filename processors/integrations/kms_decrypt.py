"""ps_type `integrations.kms_decrypt`: decrypt the org's stored credential for a provider and put it into
`context.secrets[secret_name]` for the steps that follow.

The plaintext goes nowhere else: not into the result (which only says which secret was set), not into
logs or errors. Because it sits in `context.secrets`, the executor masks any occurrence of it in every
later step's result, error message and event.

Config:
  provider     credential provider as stored in org_integration_credentials (e.g. OPENAI, ANTHROPIC)
  secret_name  key in context.secrets (default: provider in lower case)
"""

from __future__ import annotations

import re

import structlog

from convergence.extractors.credentials import stored_credential
from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, PermanentStepError
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput

log = structlog.get_logger(__name__)
_PROVIDER = re.compile(r"^[A-Z][A-Z0-9_]{1,49}$")
_SECRET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class KmsDecrypt:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        provider = str(config.get("provider") or "")
        if not _PROVIDER.match(provider):
            raise PermanentStepError(f"provider {provider!r} must be an upper-case credential provider name "
                                     "such as OPENAI", code=ErrorCode.INVALID_PARAMETERS)
        name = str(config.get("secret_name") or provider.lower())
        if not _SECRET_NAME.match(name):
            raise PermanentStepError(f"secret_name {name!r} must be snake_case", code=ErrorCode.INVALID_PARAMETERS)
        context.secrets[name] = await stored_credential(context, provider)
        log.info("credential decrypted into the run context", provider=provider, slot=name)
        return {"status": "SUCCESS", "rows_processed": 0, "provider": provider, "secret_name": name}


def get_engine() -> KmsDecrypt:
    return KmsDecrypt()
