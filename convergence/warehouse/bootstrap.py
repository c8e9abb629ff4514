"""`convergence bootstrap`: the central dataset and its 14 tables from configs/setup/bootstrap/.

Idempotent: a second run changes nothing; a schema file with new columns adds them (NULLABLE) and every
change BigQuery cannot make in place is reported in `problems`, never applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog
import yaml
from google.cloud import bigquery

from convergence.settings import Settings
from convergence.warehouse.client import call_retry
from convergence.warehouse.identifiers import validate_dataset, validate_table
from convergence.warehouse.tables import (
    Partitioning,
    SchemaFileError,
    clustering_from_config,
    ensure_dataset,
    ensure_table,
)

log = structlog.get_logger(__name__)

CENTRAL_TABLES = (
    "org_profiles", "org_api_keys", "org_subscriptions", "org_usage_quotas", "org_integration_credentials",
    "org_pipeline_configs", "org_scheduled_pipeline_runs", "org_pipeline_execution_queue",
    "org_meta_pipeline_runs", "org_meta_step_logs", "org_meta_dq_results", "org_audit_logs", "org_kms_keys",
    "org_cost_tracking",
)


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema_path: Path
    partitioning: Partitioning | None = None
    clustering: list[str] | None = None
    description: str | None = None


@dataclass(frozen=True)
class BootstrapConfig:
    tables: list[TableSpec]
    dataset_description: str | None = None


@dataclass
class BootstrapReport:
    dataset: str
    dataset_created: bool = False
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def changed(self) -> bool:
        return self.dataset_created or bool(self.created or self.updated)


def bootstrap_dir(settings: Settings) -> Path:
    return Path(settings.configs_dir) / "setup" / "bootstrap"


def load_bootstrap_config(directory: Path) -> BootstrapConfig:
    """Read config.yml; every table's schema is schemas/<name>.json next to it."""
    path = directory / "config.yml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SchemaFileError(f"{path}: {error}") from None
    tables = raw.get("tables")
    if not isinstance(tables, Mapping) or not tables:
        raise SchemaFileError(f"{path}: `tables` must map table names to their layout")
    specs = []
    for name, layout in tables.items():
        layout = layout or {}
        if not isinstance(layout, Mapping):
            raise SchemaFileError(f"{path}: tables.{name} must be a mapping")
        unknown = set(layout) - {"partitioning", "clustering", "description", "schema"}
        if unknown:
            raise SchemaFileError(f"{path}: tables.{name}: unknown keys {sorted(unknown)}")
        specs.append(TableSpec(
            name=validate_table(name),
            schema_path=directory / str(layout.get("schema", f"schemas/{name}.json")),
            partitioning=Partitioning.from_config(layout.get("partitioning")),
            clustering=clustering_from_config(layout.get("clustering")),
            description=layout.get("description"),
        ))
    dataset = raw.get("dataset") or {}
    return BootstrapConfig(specs, dataset.get("description") if isinstance(dataset, Mapping) else None)


def bootstrap(client: bigquery.Client, settings: Settings, directory: Path | None = None) -> BootstrapReport:
    directory = directory or bootstrap_dir(settings)
    config = load_bootstrap_config(directory)
    dataset = validate_dataset(settings.central_dataset)
    report = BootstrapReport(dataset=dataset)
    retry = call_retry(settings)
    report.dataset_created = ensure_dataset(client, dataset, location=settings.bigquery_location,
                                            description=config.dataset_description, retry=retry)
    for spec in config.tables:
        try:
            change = ensure_table(client, dataset, spec.name, spec.schema_path, partitioning=spec.partitioning,
                                  clustering=spec.clustering, description=spec.description, retry=retry)
        except SchemaFileError as error:
            report.problems.append(f"{spec.name}: {error}")
            continue
        getattr(report, change.action).append(spec.name)
        report.problems += [f"{spec.name}: {problem}" for problem in change.problems]
    log.info("bootstrap finished", dataset=dataset, created=len(report.created), updated=len(report.updated),
             unchanged=len(report.unchanged), problems=len(report.problems))
    return report


def report_lines(report: BootstrapReport) -> list[str]:
    """Human-readable summary for the CLI."""
    lines = [f"dataset {report.dataset}: {'created' if report.dataset_created else 'exists'}"]
    for label, names in (("created", report.created), ("updated", report.updated), ("unchanged", report.unchanged)):
        if names:
            lines.append(f"{label} ({len(names)}): {', '.join(names)}")
    lines += [f"problem: {problem}" for problem in report.problems]
    return lines

