"""What tracing costs a run: the executor with 5 no-op steps, tracing off (TracingObserver.wrap returns the
observer itself) vs on (a run span and 5 step spans, batched to an exporter that drops them).

    PYTHONPATH=. .venv/bin/python bench/tracing_overhead.py [RUNS]
"""

from __future__ import annotations

import asyncio
import sys
import time
from types import SimpleNamespace

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from convergence.observability import otel
from convergence.observability.tracing import new_trace_id
from convergence.pipeline import Executor, PipelineConfig, ProcessorRegistry, RunContext, RunObserver

REGISTRY = ProcessorRegistry(package="tests.fake_processors")
CONFIG = PipelineConfig.model_validate({"pipeline_id": "bench", "name": "bench", "steps": [
    {"step_id": f"s{i}", "ps_type": "sample.sleep", "depends_on": [f"s{i - 1}"] if i else [],
     "config": {"seconds": 0}} for i in range(5)]})


class Drop(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


async def runs(count: int) -> float:
    clock = time.perf_counter()
    for n in range(count):
        request = SimpleNamespace(run_id=f"run_{n}", org_slug="acme", pipeline="bench/x", trace_id=new_trace_id())
        observer = otel.TracingObserver.wrap(RunObserver(), request, {})
        context = RunContext(org_slug="acme", run_id=request.run_id, pipeline_id="bench", trace_id=request.trace_id)
        await Executor(REGISTRY, observer=observer).run(CONFIG, context)
    return (time.perf_counter() - clock) / count * 1e6


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    asyncio.run(runs(200))  # warm up imports and caches
    off = asyncio.run(runs(count))
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The batched processor production uses (cloud_trace), with an exporter that drops the spans.
    otel._sdk_provider(1.0).add_span_processor(BatchSpanProcessor(Drop()))
    otel._enabled = True
    on = asyncio.run(runs(count))
    print(f"{count} runs of 5 steps: tracing off {off:.0f} us/run, on {on:.0f} us/run "
          f"(+{on - off:.0f} us, {(on - off) / 6:.0f} us per span)")


if __name__ == "__main__":
    main()
