"""`--format table|json` on every command that prints data (`--json` kept as its alias)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

FORMATS = ("table", "json")


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds `--format` and `--json`; the command receives `as_json`."""

    @click.option("--format", "output_format", type=click.Choice(FORMATS), default=None,
                  help="table (default) for people, json for scripts.")
    @click.option("--json", "json_alias", is_flag=True, help="Same as --format json.")
    @functools.wraps(func)
    def wrapper(*args: Any, output_format: str | None, json_alias: bool, **kwargs: Any) -> Any:
        if json_alias and output_format == "table":
            raise click.UsageError("--json and --format table contradict each other")
        return func(*args, as_json=json_alias or output_format == "json", **kwargs)

    return wrapper


def complete_pipelines(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of PIPELINE arguments: the pipelines under CONFIGS_DIR (no settings validation, no
    network: completion must answer at once)."""
    import os
    from pathlib import Path

    from click.shell_completion import CompletionItem

    from convergence.paths import bundled_configs_dir
    from convergence.pipeline.validation import pipeline_files

    try:
        root = Path(os.environ.get("CONFIGS_DIR") or bundled_configs_dir())
        refs = []
        for path in pipeline_files(root):
            parts = path.relative_to(root).with_suffix("").parts
            if len(parts) == 3:
                refs.append("/".join(parts))
            elif len(parts) == 2:
                refs.append(f"{parts[0]}//{parts[1]}")
    except (OSError, RuntimeError):
        return []
    return [CompletionItem(ref) for ref in sorted(refs) if ref.startswith(incomplete)]
