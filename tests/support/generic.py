"""Helpers for the generic/GCP/SaaS/notification processor tests (no tests here): services on the BigQuery
emulator of the session's local stack with the real Writer, a dict-backed credential store, fresh orgs,
and a runner that goes through the real executor (and the real loader for YAML pipelines)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from convergence.pipeline import Executor, PipelineConfig, PipelineLoader, ProcessorRegistry, RunContext, RunObserver
from convergence.pipeline.results import PipelineResult, StepResult
from convergence.runtime.services import Services
from convergence.settings.model import Settings, load_settings
from tests.paths import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"


class DictCredentials:
    """Stand-in for tenancy.credentials.CredentialStore: get(org, provider) -> plaintext, LookupError if none."""

    def __init__(self, secrets: Mapping[tuple[str, str], str] | None = None):
        self.secrets = dict(secrets or {})
        self.calls: list[tuple[str, str]] = []

    def get(self, org_slug: str, provider: str) -> str:
        self.calls.append((org_slug, provider))
        try:
            return self.secrets[(org_slug, provider)]
        except KeyError:
            raise LookupError(f"no {provider} credential for {org_slug}") from None


class RecordingObserver(RunObserver):
    def __init__(self) -> None:
        self.steps: list[StepResult] = []
        self.result: PipelineResult | None = None

    async def step_finished(self, result: StepResult, context: RunContext) -> None:
        self.steps.append(result.model_copy(deep=True))

    async def pipeline_finished(self, result: PipelineResult, context: RunContext) -> None:
        self.result = result


def make_settings(local_stack: Any, **overrides: Any) -> Settings:
    base = {"environment": "local", "bigquery_emulator_host": local_stack.bigquery.host,
            "gcp_project_id": local_stack.project, "pubsub_emulator_host": local_stack.pubsub.host}
    return load_settings(**{**base, **overrides})


class TestServices(Services):
    """The real Services (BigQuery client, Writer, HTTP) with a dict credential store."""

    __test__ = False

    def __init__(self, settings: Settings, credentials: DictCredentials | None = None):
        super().__init__(settings)
        self.__dict__["credentials"] = credentials or DictCredentials()


def new_org(prefix: str = "g") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def pipeline(steps: list[dict[str, Any]], **fields: Any) -> PipelineConfig:
    return PipelineConfig(pipeline_id=fields.pop("pipeline_id", "test-pipeline"), name="test", steps=steps, **fields)


async def run(config: PipelineConfig | str, services: Services, org: str, *, parameters: dict[str, Any] | None = None,
              secrets: dict[str, str] | None = None, run_id: str | None = None, attempt: int = 1,
              observer: RunObserver | None = None) -> tuple[PipelineResult, RunContext]:
    """Run a pipeline (a config, or a path like 'gcp/cost/billing' loaded from configs/) through the executor."""
    if isinstance(config, str):
        config = PipelineLoader(CONFIGS).load(config)
    context = RunContext(org_slug=org, run_id=run_id or f"run_{uuid.uuid4().hex[:12]}", pipeline_id=config.pipeline_id,
                         parameters=dict(parameters or {}), secrets=dict(secrets or {}), attempt=attempt,
                         services=services)
    executor = Executor(ProcessorRegistry(), observer=observer, classifiers=services.error_classifiers)
    return await executor.run(config, context), context


def query(client: Any, sql: str) -> list[dict[str, Any]]:
    return [dict(row.items()) for row in client.query(sql).result()]


def table_rows(services: Services, org: str, table: str, order_by: str | None = None) -> list[dict[str, Any]]:
    ref = f"`{services.bigquery.project}.{services.org_dataset(org)}.{table}`"
    order = f" ORDER BY {order_by}" if order_by else ""
    return query(services.bigquery, f"SELECT * FROM {ref}{order}")  # noqa: S608
