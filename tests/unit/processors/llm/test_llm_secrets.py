"""The decrypted provider key never leaves the process: with the real credential store (local AES-256-GCM
keyring), the run log in BigQuery and the event observer of the consumer, a successful run and a 401 run
leave no trace of the key in run-log rows, step-log rows, events or captured logs."""

from __future__ import annotations

import asyncio
import uuid
from concurrent import futures
from typing import Any

import pytest

from convergence.consumer.observers import CompositeObserver, EventObserver, RunLogObserver
from convergence.devstack.providers.openai_server import OpenAIStandIn, completion
from convergence.pipeline import Executor, PipelineLoader, ProcessorRegistry, RunContext, RunStatus
from convergence.runtime.batching import GroupCommit
from convergence.runtime.services import Services
from convergence.schemas import RunRequest
from convergence.warehouse.bootstrap import bootstrap
from convergence.warehouse.writer import Writer
from tests.support.llm import CONFIGS, make_settings, new_org

pytestmark = [pytest.mark.emulator]
GOOD = "sk-admin-hygiene-0123456789abcdef-GOOD"
ROTATED = "sk-admin-hygiene-0123456789abcdef-OLD0"


@pytest.fixture
def bq(bq_client):
    """The session's BigQuery emulator (tests/conftest.py local_stack); every test uses its own org."""
    return bq_client


class Events:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def publish_event(self, event: Any) -> futures.Future[str]:
        self.events.append(event)
        done: futures.Future[str] = futures.Future()
        done.set_result(str(len(self.events)))
        return done

    def flush(self, timeout: float | None = None) -> None: ...

    def dump(self) -> str:
        return "\n".join(e.model_dump_json() for e in self.events)


async def run_like_the_consumer(services: Services, org: str, pipeline: str, parameters: dict[str, str]):
    request = RunRequest.create(org, pipeline, parameters, run_id=f"run_{uuid.uuid4().hex[:12]}")
    config = PipelineLoader(CONFIGS).load(pipeline)
    events = Events()
    commit = GroupCommit(lambda: asyncio.to_thread(services.runlog.flush))
    observer = CompositeObserver([RunLogObserver(services.runlog, request, 1, commit),
                                  EventObserver(events, request, 1)])
    context = RunContext(org_slug=org, run_id=request.run_id, pipeline_id=config.pipeline_id,
                         parameters=dict(parameters), services=services)
    result = await Executor(ProcessorRegistry(), observer=observer).run(config, context)
    services.runlog.flush()
    return result, events, context


def run_log_text(bq, settings, org: str) -> str:
    rows = []
    for table in ("org_meta_pipeline_runs", "org_meta_step_logs"):
        job = bq.query(f"SELECT TO_JSON_STRING(t) AS j FROM `{bq.project}.{settings.central_dataset}.{table}` AS t "
                       f"WHERE org_slug = '{org}'")
        rows += [r["j"] for r in job.result()]
    return "\n".join(rows)


async def test_key_never_in_run_log_events_or_logs(bq, tmp_path, capsys, caplog):
    async with OpenAIStandIn(completions=[completion("2026-03-02T01:00:00Z", "gpt-4o-2024-08-06",
                                                     uncached=1000, output=10)], admin_keys=(GOOD,)) as server:
        settings = make_settings(bq.project, openai_url=server.base_url, local_keyring_path=tmp_path / "keyring")
        bootstrap(bq, settings)
        services = Services(settings)
        services.__dict__["bigquery"] = bq
        services.__dict__["writer"] = Writer(bq, settings)
        org = new_org(bq, settings, "sec")
        services.credentials.put(org, "OPENAI", GOOD)  # encrypted with the local keyring
        params = {"start_date": "2026-03-02", "end_date": "2026-03-02"}
        try:
            ok, ok_events, ok_context = await run_like_the_consumer(services, org, "openai/cost/usage_cost", params)
            assert ok.status is RunStatus.SUCCESS, ok.error
            assert ok_context.secrets == {"openai": GOOD}

            services.credentials.put(org, "OPENAI", ROTATED)
            failed, failed_events, _ = await run_like_the_consumer(services, org, "openai/cost/usage_cost", params)
            assert failed.status is RunStatus.FAILED and failed.error.code == "PROVIDER_AUTH_FAILED"
        finally:
            await services.aclose()
            services.close()
        out = capsys.readouterr()
        texts = {
            "events": ok_events.dump() + failed_events.dump(),
            "run log rows": run_log_text(bq, settings, org),
            "results": ok.model_dump_json() + failed.model_dump_json(),
            "logs": out.out + out.err + caplog.text,
        }
        assert "PROVIDER_AUTH_FAILED" in texts["events"] and "PROVIDER_AUTH_FAILED" in texts["run log rows"]
        for where, text in texts.items():
            assert GOOD not in text and ROTATED not in text, where
