"""The executor: runs a pipeline's steps as a DAG with timeouts, and reports through an observer.

It knows nothing about what steps do. Each step starts as soon as its dependencies succeed, so
independent steps overlap; a failed step fails the pipeline and its dependents are SKIPPED. There are
no retries inside one delivery: a retryable failure is reported as such and Pub/Sub redelivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from convergence.pipeline.context import PlaceholderError, RunContext
from convergence.pipeline.dag import dag_problems
from convergence.pipeline.errors import ConfigError, ErrorCode, StepError
from convergence.pipeline.models import PipelineConfig, StepConfig
from convergence.pipeline.redaction import redact
from convergence.pipeline.registry import Processor, ProcessorRegistry
from convergence.pipeline.results import ErrorInfo, PipelineResult, RunStatus, StepOutput, StepResult, StepStatus

ErrorClassifier = Callable[[BaseException], ErrorInfo | None]


class RunObserver:
    """Hooks called as a run progresses (events, run logs). The default does nothing."""

    async def pipeline_started(self, config: PipelineConfig, context: RunContext) -> None: ...

    async def step_started(self, step: StepConfig, context: RunContext) -> None: ...

    async def step_finished(self, result: StepResult, context: RunContext) -> None: ...

    async def pipeline_finished(self, result: PipelineResult, context: RunContext) -> None: ...


def default_classifier(error: BaseException) -> ErrorInfo:
    if isinstance(error, StepError):
        return ErrorInfo(code=error.code, message=str(error), retryable=error.retryable)
    if isinstance(error, ConfigError | PlaceholderError):
        return ErrorInfo(code=getattr(error, "code", ErrorCode.CONFIG_INVALID), message=str(error), retryable=False)
    if isinstance(error, ConnectionError | TimeoutError):
        return ErrorInfo(code=ErrorCode.NETWORK_ERROR, message=f"{type(error).__name__}: {error}", retryable=True)
    return ErrorInfo(code=ErrorCode.PROCESSOR_ERROR, message=f"{type(error).__name__}: {error}", retryable=False)


class Executor:
    def __init__(
        self,
        registry: ProcessorRegistry | None = None,
        observer: RunObserver | None = None,
        classifiers: list[ErrorClassifier] | None = None,
    ):
        self.registry = registry or ProcessorRegistry()
        self.observer = observer or RunObserver()
        self.classifiers = classifiers or []

    def classify(self, error: BaseException) -> ErrorInfo:
        for classifier in self.classifiers:
            info = classifier(error)
            if info is not None:
                return info
        return default_classifier(error)

    async def run(self, config: PipelineConfig, context: RunContext) -> PipelineResult:
        problems = dag_problems(config.steps)
        if problems:
            raise ConfigError(problems)
        context.variables = {**config.variables, **context.variables}
        engines = {step.step_id: self.registry.resolve(step.ps_type) for step in config.steps}

        results = {s.step_id: StepResult(step_id=s.step_id, ps_type=s.ps_type) for s in config.steps}
        started_at = datetime.now(UTC)
        clock = time.perf_counter()
        await self.observer.pipeline_started(config, context)

        done: dict[str, asyncio.Future[bool]] = {
            s.step_id: asyncio.get_running_loop().create_future() for s in config.steps
        }
        tasks = [
            asyncio.create_task(
                self._run_step(step, engines[step.step_id], context, results, done), name=f"step:{step.step_id}"
            )
            for step in config.steps
        ]
        pipeline_timed_out = False
        try:
            async with asyncio.timeout(config.timeout_seconds):
                await asyncio.gather(*tasks)
        except TimeoutError:
            pipeline_timed_out = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:  # an outer cancellation (shutdown) stops every step too
                task.cancel()

        status, error = self._overall(config, results, pipeline_timed_out)
        ended_at = datetime.now(UTC)
        result = PipelineResult(
            pipeline_id=context.pipeline_id,
            run_id=context.run_id,
            org_slug=context.org_slug,
            status=status,
            started_at=started_at,
            ended_at=ended_at,
            duration_ms=int((time.perf_counter() - clock) * 1000),
            steps=[results[s.step_id] for s in config.steps],
            error=error,
        )
        await self.observer.pipeline_finished(result, context)
        return result

    async def _run_step(self, step, engine, context: RunContext, results, done) -> None:
        result: StepResult = results[step.step_id]
        try:
            deps_ok = [await asyncio.shield(done[d]) for d in step.depends_on]
            if not all(deps_ok):
                result.status = StepStatus.SKIPPED
                failed = [d for d, ok in zip(step.depends_on, deps_ok, strict=True) if not ok]
                result.error = ErrorInfo(
                    code=ErrorCode.UPSTREAM_FAILED, message=f"skipped: {', '.join(failed)} did not succeed"
                )
                await self.observer.step_finished(result, context)
                return
            await self._execute(step, engine, context, result)
        except asyncio.CancelledError:
            if result.status is StepStatus.RUNNING:
                self._finish(
                    result,
                    StepStatus.TIMEOUT,
                    ErrorInfo(code=ErrorCode.PIPELINE_TIMEOUT,
                              message="pipeline timeout reached while step was running"),
                )
                await _quietly(self.observer.step_finished(result, context))
            elif result.status is StepStatus.PENDING:
                result.status = StepStatus.SKIPPED
                result.error = ErrorInfo(code=ErrorCode.PIPELINE_TIMEOUT, message="skipped: pipeline timeout reached")
            raise
        finally:
            if not done[step.step_id].done():
                done[step.step_id].set_result(result.status is StepStatus.SUCCESS)

    async def _execute(self, step: StepConfig, engine: Processor, context: RunContext, result: StepResult) -> None:
        result.status = StepStatus.RUNNING
        result.started_at = datetime.now(UTC)
        clock = time.perf_counter()
        await self.observer.step_started(step, context)
        try:
            async with asyncio.timeout(step.timeout_seconds):
                output: StepOutput = await engine.execute(step, context)
        except TimeoutError:
            self._finish(
                result,
                StepStatus.TIMEOUT,
                ErrorInfo(code=ErrorCode.STEP_TIMEOUT,
                          message=f"step exceeded timeout of {step.timeout_minutes:g} min"),
                clock,
            )
        except asyncio.CancelledError:
            result.duration_ms = int((time.perf_counter() - clock) * 1000)
            raise
        except Exception as error:  # noqa: BLE001 - every processor failure becomes a step result
            info = self.classify(error)
            info.message = redact(info.message, context.secrets)
            self._finish(result, StepStatus.FAILED, info, clock)
        else:
            fields: dict[str, Any] = redact(dict(output or {}), context.secrets)
            status = str(fields.pop("status", "SUCCESS")).upper()
            result.rows_processed = int(fields.pop("rows_processed", 0) or 0)
            result.result = fields
            if status in ("SUCCESS", "COMPLETED", "OK"):
                context.outputs[step.step_id] = {"rows_processed": result.rows_processed, **fields}
                self._finish(result, StepStatus.SUCCESS, None, clock)
            else:
                message = str(fields.get("error") or f"processor returned status {status}")
                self._finish(result, StepStatus.FAILED, ErrorInfo(code=ErrorCode.STEP_FAILED, message=message), clock)
        await self.observer.step_finished(result, context)

    @staticmethod
    def _finish(result: StepResult, status: StepStatus, error: ErrorInfo | None, clock: float | None = None) -> None:
        result.status = status
        result.error = error
        result.ended_at = datetime.now(UTC)
        if clock is not None:
            result.duration_ms = int((time.perf_counter() - clock) * 1000)

    @staticmethod
    def _overall(config: PipelineConfig, results: dict[str, StepResult], timed_out: bool):
        if timed_out:
            return RunStatus.TIMEOUT, ErrorInfo(
                code=ErrorCode.PIPELINE_TIMEOUT, message=f"pipeline exceeded timeout of {config.timeout_minutes:g} min"
            )
        ordered = [results[s.step_id] for s in config.steps]
        for step in ordered:
            if step.status is StepStatus.TIMEOUT:
                error = step.error or ErrorInfo(code=ErrorCode.STEP_TIMEOUT, message="timed out")
                return RunStatus.TIMEOUT, ErrorInfo(code=error.code, message=f"{step.step_id}: {error.message}")
        failed = [s for s in ordered if s.status is StepStatus.FAILED]
        if failed:
            first = failed[0]
            assert first.error is not None
            return RunStatus.FAILED, ErrorInfo(
                code=first.error.code,
                message=f"{first.step_id}: {first.error.message}",
                retryable=all(s.error is not None and s.error.retryable for s in failed),
            )
        return RunStatus.SUCCESS, None


async def _quietly(awaitable: Any) -> None:
    # Reporting must never mask the cancellation.
    with contextlib.suppress(Exception):
        await awaitable
