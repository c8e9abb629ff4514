"""Helpers for the LLM pipeline tests (no tests here): services wired to the BigQuery emulator and the
provider stand-ins, a recording observer, and a pipeline runner that goes through the real loader
and executor. Writes go through the real warehouse Writer; the credential store is a dict with the
CredentialStore's `get(org, provider)` call.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from google.cloud import bigquery

from convergence.pipeline import Executor, PipelineLoader, ProcessorRegistry, RunContext, RunObserver
from convergence.pipeline.results import PipelineResult, StepResult
from convergence.runtime.services import Services
from convergence.settings.model import Settings, load_settings
from convergence.warehouse.writer import Writer
from tests.paths import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"


class RecordingObserver(RunObserver):
    """Keeps what the event and run-log observers would publish (step results, errors)."""

    def __init__(self) -> None:
        self.steps: list[StepResult] = []
        self.result: PipelineResult | None = None

    async def step_finished(self, result: StepResult, context: RunContext) -> None:
        self.steps.append(result.model_copy(deep=True))

    async def pipeline_finished(self, result: PipelineResult, context: RunContext) -> None:
        self.result = result

    def dump(self) -> str:
        """Everything that would leave the process, as text (to check that no secret is in it)."""
        parts = [s.model_dump_json() for s in self.steps]
        if self.result is not None:
            parts.append(self.result.model_dump_json())
        return "\n".join(parts)


class DictCredentials:
    """Stand-in for tenancy.credentials.CredentialStore: get(org, provider) -> plaintext."""

    def __init__(self, secrets: Mapping[tuple[str, str], str]):
        self.secrets = dict(secrets)
        self.calls: list[tuple[str, str]] = []

    def get(self, org_slug: str, provider: str) -> str:
        self.calls.append((org_slug, provider))
        try:
            return self.secrets[(org_slug, provider)]
        except KeyError:
            raise LookupError(f"no {provider} credential for {org_slug}") from None


class LlmTestServices(Services):
    """Services on the emulator, with the provider base URLs pointing at the stand-ins."""

    def __init__(self, settings: Settings, client: bigquery.Client, credentials: Any):
        super().__init__(settings)
        self.__dict__["bigquery"] = client
        self.__dict__["credentials"] = credentials
        self.__dict__["writer"] = Writer(client, settings)

    def org_dataset(self, org_slug: str) -> str:
        return self.settings.org_dataset(org_slug)


def make_settings(project: str, openai_url: str = "http://127.0.0.1:9", anthropic_url: str = "http://127.0.0.1:9",
                  **overrides: Any) -> Settings:
    return load_settings(environment="local", gcp_project_id=project, openai_base_url=openai_url,
                         anthropic_base_url=anthropic_url, **overrides)


def new_org(client: bigquery.Client, settings: Settings, prefix: str = "llm") -> str:
    """A fresh org slug with its dataset, so tests never see each other's rows."""
    org = f"{prefix}_{uuid.uuid4().hex[:8]}"
    client.create_dataset(f"{client.project}.{settings.org_dataset(org)}", exists_ok=True)
    return org


async def run_pipeline(path: str, org: str, services: Services, parameters: Mapping[str, Any] | None = None,
                       secrets: Mapping[str, str] | None = None, run_id: str | None = None
                       ) -> tuple[PipelineResult, RecordingObserver, RunContext]:
    config = PipelineLoader(CONFIGS).load(path)
    observer = RecordingObserver()
    context = RunContext(org_slug=org, run_id=run_id or f"run_{uuid.uuid4().hex[:12]}",
                         pipeline_id=config.pipeline_id, parameters=dict(parameters or {}),
                         secrets=dict(secrets or {}), services=services)
    result = await Executor(ProcessorRegistry(), observer=observer).run(config, context)
    return result, observer, context


def rows(client: bigquery.Client, settings: Settings, org: str, table: str, where: str = "TRUE",
         order: str = "1") -> list[dict[str, Any]]:
    table_id = f"`{client.project}.{settings.org_dataset(org)}.{table}`"
    job = client.query(f"SELECT * FROM {table_id} WHERE org_slug = @org AND ({where}) ORDER BY {order}",
                       job_config=bigquery.QueryJobConfig(
                           query_parameters=[bigquery.ScalarQueryParameter("org", "STRING", org)]))
    return [dict(r) for r in job.result()]


def scalar(client: bigquery.Client, sql: str) -> Any:
    return next(iter(client.query(sql).result()))[0]


def repo_path(relative: str) -> Path:
    return REPO_ROOT / relative


@contextlib.asynccontextmanager
async def standin_stacks(bq: bigquery.Client, provider: str, url_setting: str, org_prefix: str,
                         default_key: str) -> AsyncIterator[Callable[..., Awaitable[tuple[Any, str]]]]:
    """start(stand-in, key=default_key) -> (services on that stand-in, a fresh org holding the key);
    every stand-in started and its services are closed at the end."""
    opened: list[tuple[Any, Any]] = []

    async def start(server: Any, key: str = default_key) -> tuple[Any, str]:
        await server.start()
        settings = make_settings(bq.project, **{url_setting: server.base_url})
        org = new_org(bq, settings, org_prefix)
        services = LlmTestServices(settings, bq, DictCredentials({(org, provider): key}))
        opened.append((server, services))
        return services, org

    try:
        yield start
    finally:
        for server, services in opened:
            await services.aclose()
            await server.stop()
