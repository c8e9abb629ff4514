"""integrations.kms_decrypt: the plaintext reaches later steps through context.secrets and nowhere else."""

from __future__ import annotations

from types import SimpleNamespace

from convergence.pipeline import Executor, PipelineConfig, ProcessorRegistry, RunContext, RunStatus
from tests.support.llm import DictCredentials, RecordingObserver

SECRET = "sk-admin-plaintext-7f3a9c1e55d2"


class LeakyStore:
    def get(self, org_slug, provider):
        raise RuntimeError(f"decrypt failed for ciphertext of {SECRET}")


def pipeline(*steps) -> PipelineConfig:
    return PipelineConfig.model_validate({"pipeline_id": "kms-test", "name": "kms", "steps": list(steps)})


DECRYPT = {"step_id": "decrypt", "ps_type": "integrations.kms_decrypt",
           "config": {"provider": "OPENAI", "secret_name": "openai"}}


async def run(config, store):
    observer = RecordingObserver()
    context = RunContext(org_slug="acme", run_id="run-kms", pipeline_id="kms-test",
                         services=SimpleNamespace(credentials=store))
    result = await Executor(ProcessorRegistry(), observer=observer).run(config, context)
    return result, observer, context


async def test_secret_goes_into_the_context_only(capsys, caplog):
    store = DictCredentials({("acme", "OPENAI"): SECRET})
    result, observer, context = await run(pipeline(DECRYPT), store)
    assert result.status is RunStatus.SUCCESS
    assert context.secrets == {"openai": SECRET}
    assert result.step("decrypt").result == {"provider": "OPENAI", "secret_name": "openai"}
    assert store.calls == [("acme", "OPENAI")]
    out = capsys.readouterr()
    assert SECRET not in observer.dump() + out.out + out.err + caplog.text + repr(context)


async def test_missing_credential_is_permanent():
    result, _, context = await run(pipeline(DECRYPT), DictCredentials({}))
    error = result.step("decrypt").error
    assert error.code == "CREDENTIAL_NOT_FOUND" and "acme has no OPENAI credential" in error.message
    assert not result.retryable and context.secrets == {}


async def test_a_failing_decrypt_never_carries_key_material(capsys):
    result, observer, _ = await run(pipeline(DECRYPT), LeakyStore())
    error = result.step("decrypt").error
    assert error.code == "CREDENTIAL_DECRYPT_FAILED" and "RuntimeError" in error.message
    out = capsys.readouterr()
    assert SECRET not in observer.dump() + out.out + out.err


async def test_bad_provider_name_is_refused():
    bad = {**DECRYPT, "config": {"provider": "openai; drop"}}
    result, _, _ = await run(pipeline(bad), DictCredentials({}))
    assert result.step("decrypt").error.code == "INVALID_PARAMETERS"
