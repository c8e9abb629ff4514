"""Executor behaviour: DAG overlap, timeouts, failures, skipped dependents, variables, redaction."""

import asyncio

import pytest

from convergence.pipeline import (
    ConfigError,
    Executor,
    PipelineConfig,
    ProcessorRegistry,
    RunContext,
    RunStatus,
    StepConfig,
    StepStatus,
)
from convergence.pipeline.executor import RunObserver
from tests.fake_processors.sample import sleep as sleep_module

REGISTRY = ProcessorRegistry(package="tests.fake_processors")


def make_config(steps, **extra) -> PipelineConfig:
    return PipelineConfig.model_validate({"pipeline_id": "test-pipe", "name": "test", "steps": steps, **extra})


def context(**kwargs) -> RunContext:
    return RunContext(org_slug="acme", run_id="run-1", pipeline_id="test-pipe", **kwargs)


async def run(config, ctx=None, observer=None):
    return await Executor(REGISTRY, observer=observer).run(config, ctx or context())


def sleep_step(step_id, seconds=0.0, depends_on=None, **config):
    return {"step_id": step_id, "ps_type": "sample.sleep", "depends_on": depends_on or [],
            "config": {"seconds": seconds, **config}}


async def test_independent_steps_overlap_in_time():
    sleep_module.JOURNAL.clear()
    config = make_config([
        sleep_step("a", 0.05),
        sleep_step("b", 0.3, "a"), sleep_step("c", 0.3, "a"),
        sleep_step("d", 0.05, ["b", "c"]),
    ])
    result = await run(config)
    assert result.status is RunStatus.SUCCESS
    times = {(s, e): t for s, e, t in sleep_module.JOURNAL}
    # b and c both start before either ends: they ran concurrently.
    assert times[("b", "start")] < times[("c", "end")] and times[("c", "start")] < times[("b", "end")]
    # d waits for both; a ran before b and c.
    assert times[("d", "start")] >= max(times[("b", "end")], times[("c", "end")])
    assert times[("a", "end")] <= min(times[("b", "start")], times[("c", "start")])
    assert result.duration_ms >= 300  # the journal above shows the overlap; no upper bound on a loaded machine


async def test_cycle_is_rejected_before_anything_runs():
    sleep_module.JOURNAL.clear()
    # The loader refuses cycles too; the executor checks again for configs built in code.
    steps = [StepConfig.model_validate(sleep_step("a", 0, "b")), StepConfig.model_validate(sleep_step("b", 0, "a"))]
    config = PipelineConfig.model_construct(pipeline_id="pp", name="p", timeout_minutes=1, steps=steps)
    with pytest.raises(ConfigError, match="cycle"):
        await run(config)
    assert sleep_module.JOURNAL == []


async def test_step_timeout_gives_timeout_and_skips_dependents():
    sleep_module.JOURNAL.clear()
    slow = {**sleep_step("slow", 5), "timeout_minutes": 0.002}  # 0.12 s
    config = make_config([slow, sleep_step("after", 0, "slow"), sleep_step("later", 0, "after"),
                          sleep_step("independent", 0)])
    result = await run(config)
    assert result.status is RunStatus.TIMEOUT
    assert result.step("slow").status is StepStatus.TIMEOUT
    assert result.step("slow").error.code == "STEP_TIMEOUT"
    assert result.step("after").status is StepStatus.SKIPPED
    assert result.step("later").status is StepStatus.SKIPPED
    assert result.step("independent").status is StepStatus.SUCCESS
    # Cancellation really stopped the work: the slow step never reached its end.
    await asyncio.sleep(0.05)
    assert ("slow", "end") not in {(s, e) for s, e, _ in sleep_module.JOURNAL}


async def test_pipeline_timeout_cancels_running_steps_and_skips_pending():
    sleep_module.JOURNAL.clear()
    config = make_config([sleep_step("a", 5), sleep_step("b", 0, "a")], timeout_minutes=0.002)
    result = await run(config)
    assert result.status is RunStatus.TIMEOUT
    assert result.error.code == "PIPELINE_TIMEOUT"
    assert result.step("a").status is StepStatus.TIMEOUT
    assert result.step("b").status is StepStatus.SKIPPED
    assert result.duration_ms < 4000  # cut at the timeout, not after step a's 5 s


async def test_failing_step_error_is_in_the_result_and_dependents_skipped():
    config = make_config([
        {"step_id": "extract", "ps_type": "sample.fail", "config": {"kind": "permanent"}},
        sleep_step("transform", 0, "extract"),
    ])
    result = await run(config)
    assert result.status is RunStatus.FAILED
    extract = result.step("extract")
    assert extract.status is StepStatus.FAILED
    assert extract.error.code == "PROVIDER_AUTH_FAILED"
    assert "401" in extract.error.message
    assert result.step("transform").status is StepStatus.SKIPPED
    assert result.step("transform").error.code == "UPSTREAM_FAILED"
    assert result.retryable is False
    assert result.error.message.startswith("extract:")


@pytest.mark.parametrize(("kind", "code", "retryable"), [
    ("transient", "PROVIDER_UNAVAILABLE", True),
    ("crash", "PROCESSOR_ERROR", False),
    ("status", "STEP_FAILED", False),
])
async def test_failure_kinds_are_classified(kind, code, retryable):
    config = make_config([{"step_id": "s", "ps_type": "sample.fail", "config": {"kind": kind}}])
    result = await run(config)
    assert result.status is RunStatus.FAILED
    assert result.error.code == code
    assert result.retryable is retryable


async def test_variables_and_parameters_resolve_and_outputs_flow():
    config = make_config(
        [sleep_step("first", 0, echo="{greeting} {org_slug} {day}"),
         sleep_step("second", 0, "first", echo="after {first.echo} rows={first.rows_processed}")],
        variables={"greeting": "hello", "day": "default"},
    )
    result = await run(config, context(parameters={"day": "2026-11-20"}))
    assert result.step("first").result["echo"] == "hello acme 2026-11-20"
    assert result.step("second").result["echo"] == "after hello acme 2026-11-20 rows=1"


async def test_unknown_placeholder_fails_the_step_with_a_clear_error():
    config = make_config([sleep_step("s", 0, echo="{no_such_thing}/x")], variables={"known": 1})
    result = await run(config)
    step = result.step("s")
    assert step.status is StepStatus.FAILED
    assert step.error.code == "UNKNOWN_PLACEHOLDER"
    assert "{no_such_thing}" in step.error.message and "known" in step.error.message


async def test_secrets_never_reach_results():
    secret = "sk-live-abcdef123456"
    config = make_config([{"step_id": "s", "ps_type": "sample.fail", "config": {"kind": "leak"}}])
    result = await run(config, context(secrets={"openai": secret}))
    assert secret not in result.model_dump_json()
    assert "[REDACTED]" in result.step("s").error.message


async def test_observer_sees_every_step_in_order():
    seen = []

    class Recorder(RunObserver):
        async def pipeline_started(self, config, ctx):
            seen.append(("pipeline_started", None))

        async def step_started(self, step, ctx):
            seen.append(("step_started", step.step_id))

        async def step_finished(self, result, ctx):
            seen.append(("step_finished", result.step_id, result.status.value))

        async def pipeline_finished(self, result, ctx):
            seen.append(("pipeline_finished", result.status.value))

    config = make_config([sleep_step("a"), sleep_step("b", 0, "a")])
    await run(config, observer=Recorder())
    assert seen == [("pipeline_started", None), ("step_started", "a"), ("step_finished", "a", "SUCCESS"),
                    ("step_started", "b"), ("step_finished", "b", "SUCCESS"), ("pipeline_finished", "SUCCESS")]


async def test_unknown_ps_type_is_a_config_error():
    config = make_config([{"step_id": "s", "ps_type": "nothing.here"}])
    with pytest.raises(ConfigError, match="unknown ps_type 'nothing.here'"):
        await run(config)


async def test_processor_without_async_execute_is_refused():
    config = make_config([{"step_id": "s", "ps_type": "sample.nonasync"}])
    with pytest.raises(ConfigError, match="async def execute"):
        await run(config)


async def test_parameters_cannot_override_the_run_identity():
    config = make_config([sleep_step("s", 0, echo="{org_slug}/{run_id}")], variables={"org_slug": "victim"})
    result = await run(config, context(parameters={"org_slug": "other_org", "run_id": "forged"}))
    assert result.step("s").result["echo"] == "acme/run-1"
