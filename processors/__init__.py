"""Processors: `ps_type` `provider.domain` resolves to `processors/{provider}/{domain}.py`, whose `get_engine()`
returns an object with `async def execute(step, context) -> StepOutput` (see convergence/pipeline/registry.py)."""
