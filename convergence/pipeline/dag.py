"""Dependency graph of a pipeline's steps: validation and execution levels."""

from __future__ import annotations

from collections.abc import Sequence

from convergence.pipeline.errors import ConfigProblem
from convergence.pipeline.models import StepConfig


def dag_problems(steps: Sequence[StepConfig]) -> list[ConfigProblem]:
    """Every structural problem: duplicate ids, self or unknown dependencies, cycles."""
    problems: list[ConfigProblem] = []
    seen: set[str] = set()
    for index, step in enumerate(steps):
        if step.step_id in seen:
            problems.append(ConfigProblem(f"duplicate step_id {step.step_id!r}", f"steps.{index}.step_id"))
        seen.add(step.step_id)
    for index, step in enumerate(steps):
        for dep in step.depends_on:
            if dep == step.step_id:
                problems.append(ConfigProblem(f"step {dep!r} depends on itself", f"steps.{index}.depends_on"))
            elif dep not in seen:
                problems.append(
                    ConfigProblem(f"step {step.step_id!r} depends on unknown step {dep!r}", f"steps.{index}.depends_on")
                )
    if not problems:
        cycle = find_cycle(steps)
        if cycle:
            problems.append(ConfigProblem("dependency cycle: " + " -> ".join(cycle), "steps"))
    return problems


def find_cycle(steps: Sequence[StepConfig]) -> list[str] | None:
    deps = {s.step_id: list(s.depends_on) for s in steps}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in deps.get(node, []):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for step_id in deps:
        if step_id not in state and (found := visit(step_id)):
            return found
    return None
