"""`convergence pipelines list|show|new|schema`: the pipelines under configs/, a new one from a skeleton,
and the pipeline YAML's JSON Schema for editors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import click

from convergence.commands.output import complete_pipelines, output_options

PIPELINE_SKELETON = """\
# {ref}: {title}. Run it with `convergence publish run ORG {ref}`; check it with `convergence validate`.
pipeline_id: "{{org_slug}}-{provider}-{domain_id}-{name}"
name: {title}
description: What this pipeline loads, from where, into which table.
timeout_minutes: 30
steps:
  - step_id: {name}
    ps_type: {ps_type}
    description: The one step; add more with depends_on for a DAG.
    timeout_minutes: 10
    config: {{}}
tags: [{provider}]
"""

PROCESSOR_SKELETON = '''\
"""{ps_type}: one processor per ps_type. `execute` gets the step (its `config` from the YAML) and the run's
context (org, parameters, services), and returns at least `status` and `rows_processed`."""

from __future__ import annotations

from convergence.pipeline import RunContext, StepConfig, StepOutput


class Processor:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        # Fetch from the provider, then write through context.services.writer (one write per step).
        return {{"status": "SUCCESS", "rows_processed": 0}}


def get_engine() -> Processor:
    return Processor()
'''


def _loader() -> Any:
    from convergence.cli import load_settings_or_exit
    from convergence.pipeline import PipelineLoader

    return PipelineLoader(load_settings_or_exit().configs_dir)


def _describe(loader: Any, path: Path) -> dict[str, Any]:
    from convergence.pipeline import ConfigError

    relative = path.relative_to(loader.configs_dir)
    parts = relative.with_suffix("").parts
    ref = f"{parts[0]}/{'/'.join(parts[1:-1])}/{parts[-1]}" if len(parts) <= 3 else "/".join(parts)
    try:
        config = loader.load_file(path)
    except ConfigError as error:
        return {"pipeline": ref, "file": str(relative), "valid": False, "error": str(error)[:300]}
    return {"pipeline": ref, "file": str(relative), "valid": True, "name": config.name,
            "steps": [s.ps_type for s in config.steps],
            "schedule": config.schedule.type if config.schedule else None, "tags": list(config.tags)}


@click.group()
def pipelines() -> None:
    """The pipelines under configs/: list, show, create, and the YAML's JSON Schema."""


@pipelines.command("list")
@output_options
def list_pipelines(as_json: bool) -> None:
    """Every pipeline with its steps' ps_types and schedule."""
    from convergence.commands.runs import render_table
    from convergence.pipeline.validation import pipeline_files

    loader = _loader()
    items = [_describe(loader, path) for path in pipeline_files(loader.configs_dir)]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    rows = [[i["pipeline"], ",".join(i.get("steps", [])) or i.get("error", ""), i.get("schedule"),
             "ok" if i["valid"] else "INVALID"] for i in items]
    click.echo(render_table(("PIPELINE", "STEPS", "SCHEDULE", "CONFIG"), rows))


@pipelines.command("show")
@click.argument("pipeline", shell_complete=complete_pipelines)
@output_options
def show_pipeline(pipeline: str, as_json: bool) -> None:
    """One pipeline as the service reads it (defaults filled in)."""
    from convergence.pipeline import ConfigError

    try:
        config = _loader().load(pipeline)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    data = config.model_dump(mode="json")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    import yaml

    click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@pipelines.command("new")
@click.argument("pipeline", shell_complete=complete_pipelines)
@click.option("--ps-type", default=None, help="Use this existing ps_type instead of writing a processor skeleton.")
@click.option("--package", default=None,
              help="The processor package to write into (one of PROCESSOR_PACKAGES; default: the first).")
def new_pipeline(pipeline: str, ps_type: str | None, package: str | None) -> None:
    """Write configs/PROVIDER/DOMAIN/NAME.yml and, unless its ps_type exists, the processor PROVIDER/DOMAIN.py."""
    from convergence.cli import load_settings_or_exit
    from convergence.pipeline import PipelineLoader, PipelineRef
    from convergence.pipeline.errors import InvalidPipelineRef
    from convergence.pipeline.registry import ProcessorRegistry

    try:
        ref = PipelineRef.parse(pipeline)
    except InvalidPipelineRef as error:
        raise click.BadParameter(str(error), param_hint="PIPELINE") from None
    settings = load_settings_or_exit()
    package = package or settings.processor_packages[0]
    if package not in settings.processor_packages:
        raise click.BadParameter(f"{package} is not in PROCESSOR_PACKAGES {settings.processor_packages}",
                                 param_hint="--package")
    loader = PipelineLoader(settings.configs_dir)
    target = loader.configs_dir / ref.relative_path()
    if target.exists():
        raise click.ClickException(f"{target} exists already")
    domain = ref.domain or "main"
    ps_type = ps_type or f"{ref.provider}.{domain}"
    written = []
    if not ProcessorRegistry(settings.processor_packages).exists(ps_type):
        if ps_type != f"{ref.provider}.{domain}":
            raise click.ClickException(f"ps_type {ps_type} does not exist; leave --ps-type out to create "
                                       f"{ref.provider}.{domain}")
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise click.ClickException(f"processor package {package} cannot be imported")
        folder = Path(spec.origin).parent / ref.provider
        folder.mkdir(exist_ok=True)
        if not (folder / "__init__.py").exists():
            (folder / "__init__.py").write_text(f'"""{ref.provider} processors."""\n')
        module = folder / f"{domain}.py"
        module.write_text(PROCESSOR_SKELETON.format(ps_type=ps_type))
        written.append(module)
    target.parent.mkdir(parents=True, exist_ok=True)
    title = ref.name.replace("_", " ").capitalize()
    target.write_text(PIPELINE_SKELETON.format(ref=ref, title=title, provider=ref.provider,
                                               domain_id=domain.replace("_", "-"), name=ref.name, ps_type=ps_type))
    written.insert(0, target)
    for path in written:
        click.echo(f"wrote {path}")


@pipelines.command("schema")
def schema() -> None:
    """The pipeline YAML's JSON Schema (for editors: yaml-language-server, VS Code, IntelliJ)."""
    from convergence.pipeline.models import PipelineConfig

    document = PipelineConfig.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "Convergence pipeline"
    click.echo(json.dumps(document, indent=2))
