"""Test processor: fails the way its config says (transient, permanent, crash, status)."""

from convergence.pipeline.errors import PermanentStepError, TransientStepError


class Fail:
    async def execute(self, step, context):
        kind = step.config.get("kind", "permanent")
        if kind == "transient":
            raise TransientStepError("provider answered 503", code="PROVIDER_UNAVAILABLE")
        if kind == "permanent":
            raise PermanentStepError("provider answered 401: invalid key", code="PROVIDER_AUTH_FAILED")
        if kind == "leak":
            raise PermanentStepError(f"bad key {context.secrets['openai']}", code="PROVIDER_AUTH_FAILED")
        if kind == "status":
            return {"status": "FAILED", "error": "nothing to do"}
        raise RuntimeError("boom")


def get_engine():
    return Fail()
