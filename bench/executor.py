"""Executor overhead for a 20-step pipeline of no-op processors, against awaiting the same 20 coroutines
directly with asyncio.gather, both measured in this run (the machines are noisy: only ratios travel).

    .venv/bin/python bench/executor.py [--repeat 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from convergence.pipeline import Executor, PipelineConfig, ProcessorRegistry, RunContext

STEPS = 20


def config(shape: str) -> PipelineConfig:
    steps = []
    for index in range(STEPS):
        step = {"step_id": f"s{index:02d}", "ps_type": "utility.noop"}
        if shape == "chain" and index:
            step["depends_on"] = f"s{index - 1:02d}"
        steps.append(step)
    return PipelineConfig.model_validate({"pipeline_id": f"bench-{shape}", "name": shape, "steps": steps})


async def measure(repeat: int) -> dict[str, float]:
    registry = ProcessorRegistry()
    executor = Executor(registry)
    engine = registry.resolve("utility.noop")
    results: dict[str, float] = {}
    for shape in ("parallel", "chain"):
        cfg = config(shape)
        baseline, executed = [], []
        for _ in range(repeat):
            context = RunContext(org_slug="bench", run_id="run_bench", pipeline_id=cfg.pipeline_id)
            start = time.perf_counter()
            await asyncio.gather(*(engine.execute(step, context) for step in cfg.steps))
            baseline.append(time.perf_counter() - start)
            start = time.perf_counter()
            await executor.run(cfg, context)
            executed.append(time.perf_counter() - start)
        base, run = statistics.median(baseline), statistics.median(executed)
        results[f"{shape}_gather_ms"] = base * 1000
        results[f"{shape}_executor_ms"] = run * 1000
        results[f"{shape}_overhead_per_step_ms"] = (run - base) / STEPS * 1000
        results[f"{shape}_ratio"] = run / base
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    results = asyncio.run(measure(args.repeat))
    for shape in ("parallel", "chain"):
        print(f"{shape:>8}: gather {results[f'{shape}_gather_ms']:.3f} ms, executor "
              f"{results[f'{shape}_executor_ms']:.3f} ms (x{results[f'{shape}_ratio']:.1f}), overhead "
              f"{results[f'{shape}_overhead_per_step_ms'] * 1000:.0f} us/step (target < 2000 us/step)")


if __name__ == "__main__":
    main()
