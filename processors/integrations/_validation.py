"""The `<provider>.validation` ps_types (openai, anthropic, gcp): the provider's cheapest authenticated call
with the org's credential, and the verdict (VALID / INVALID / ERROR, when, why) on the credential row.

Config:
  secret_name  key in context.secrets holding the credential (a kms_store or kms_decrypt step before);
               without it the org's stored credential is decrypted
  fail_on_invalid  default true: an INVALID credential fails the step (CREDENTIAL_INVALID), so the steps
               that need it (seeds, extracts) are skipped
"""

from __future__ import annotations

import asyncio

from convergence.extractors.credentials import stored_credential
from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, PermanentStepError, TransientStepError
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.tenancy.validation import check_credential


class CredentialValidation:
    def __init__(self, provider: str):
        self.provider = provider

    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        slot = config.get("secret_name")
        secret = context.secrets.get(str(slot)) if slot else None
        if slot and not secret:
            raise PermanentStepError(f"no credential in context secrets[{slot!r}]",
                                     code=ErrorCode.CREDENTIAL_NOT_FOUND)
        if not secret:
            secret = await stored_credential(context, self.provider)
        verdict = await check_credential(context.services, self.provider, secret)
        await asyncio.to_thread(context.services.credentials.set_status, context.org_slug, self.provider,
                                verdict.status, verdict.error)
        # This step's verdict is the one write: a run-time 401 hook must not write it again.
        context.credentials_read.pop(verdict.provider, None)
        if verdict.status == "INVALID" and config.get("fail_on_invalid", True):
            raise PermanentStepError(f"the {verdict.provider} credential is INVALID: {verdict.error}",
                                     code=ErrorCode.CREDENTIAL_INVALID)
        if verdict.status == "ERROR":
            raise TransientStepError(f"the {verdict.provider} credential could not be checked: {verdict.error}",
                                     code=ErrorCode.PROVIDER_UNAVAILABLE)
        return {"status": "SUCCESS", "rows_processed": 0, "provider": verdict.provider,
                "validation_status": verdict.status}
