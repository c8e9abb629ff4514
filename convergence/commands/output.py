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
