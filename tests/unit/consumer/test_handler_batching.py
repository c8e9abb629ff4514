"""RunHandler on the emulators: concurrent runs share their run-log inserts, yet each run is acked only
once its own rows are written; when they cannot be written the message comes back (nack)."""

from __future__ import annotations

import asyncio

import pytest

from convergence.consumer.handler import RunHandler
from convergence.consumer.outcome import OutcomeKind
from convergence.infra.apply import apply
from convergence.infra.topology import Topology
from convergence.pipeline import PipelineLoader
from convergence.runtime.services import Services
from convergence.schemas import RunRequest
from convergence.tenancy.onboarding import onboard_org
from convergence.warehouse.bootstrap import bootstrap
from tests.support.warehouse import emulator_settings, unique

pytestmark = pytest.mark.emulator

NOOP = "utility/smoke/noop"


@pytest.fixture
def services(local_stack, tmp_path):
    settings = emulator_settings(local_stack, pubsub_emulator_host=local_stack.pubsub.host,
                                 local_keyring_path=tmp_path / "keyring.key")
    services = Services(settings)
    assert bootstrap(services.bigquery, settings).ok
    apply(Topology.from_settings(settings), settings)  # the events topic
    yield services
    services.close()


def handler_for(services: Services) -> RunHandler:
    return RunHandler(services=services, loader=PipelineLoader(services.settings.configs_dir))


def request(org: str) -> RunRequest:
    return RunRequest.create(org, NOOP, {})


async def handle(handler: RunHandler, req: RunRequest):
    return await handler.handle(req.to_json(), req.attributes(), f"m-{req.run_id}", 1)


def test_concurrent_runs_share_inserts_and_each_is_logged(services):
    org = unique("hb")
    onboard_org(services.bigquery, services.settings, services.cipher, org, "SCALE")
    handler = handler_for(services)
    requests = [request(org) for _ in range(40)]

    async def main():
        outcomes = await asyncio.gather(*(handle(handler, r) for r in requests))
        await handler.aclose()
        return outcomes

    calls_before = services.runlog.calls
    outcomes = asyncio.run(main())
    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCEEDED] * 40
    calls = services.runlog.calls - calls_before
    # One at a time this is 40 x (1 query + 3 inserts) = 160 calls; shared, a small fraction of that.
    assert calls < 40, calls
    for r in requests:
        record = services.runlog.latest_run(r.run_id, org)
        assert record is not None and record.status == "SUCCESS", r.run_id
        assert [s.status for s in services.runlog.step_logs(r.run_id, org)] == ["SUCCESS"]
    # A redelivery of any of them is recognised as done.
    again = asyncio.run(handle(handler_for(services), requests[7]))
    assert (again.kind, again.code) == (OutcomeKind.DUPLICATE, "ALREADY_SUCCEEDED")


def test_a_run_whose_log_cannot_be_written_is_nacked_then_succeeds_once_it_can(services):
    org = unique("hf")
    onboard_org(services.bigquery, services.settings, services.cipher, org, "SCALE")
    bq = services.bigquery
    steps_table = f"{bq.project}.{services.settings.central_dataset}.org_meta_step_logs"
    bq.delete_table(steps_table)  # the run's step rows have nowhere to go
    req = request(org)

    first = asyncio.run(handle(handler_for(services), req))
    assert first.kind is OutcomeKind.RETRY and first.code == "INFRASTRUCTURE_ERROR", first
    assert "run log" in first.message

    assert bootstrap(bq, services.settings).ok  # BigQuery is back
    second = asyncio.run(handle(handler_for(services), req))
    assert second.kind is OutcomeKind.SUCCEEDED
    assert services.runlog.latest_run(req.run_id, org).status == "SUCCESS"
    assert [s.step_id for s in services.runlog.step_logs(req.run_id, org)] == ["noop"]


def test_a_rejection_that_cannot_be_recorded_is_nacked_then_recorded(services):
    bq = services.bigquery
    bq.delete_table(f"{bq.project}.{services.settings.central_dataset}.org_meta_pipeline_runs")

    async def malformed():
        return await handler_for(services).handle(b"{not json", {}, "m-bad-1", 1)

    first = asyncio.run(malformed())
    assert (first.kind, first.code) == (OutcomeKind.RETRY, "INFRASTRUCTURE_ERROR")
    assert bootstrap(bq, services.settings).ok
    second = asyncio.run(malformed())
    assert (second.kind, second.code) == (OutcomeKind.REJECTED, "MALFORMED_JSON")
    record = services.runlog.latest_run("msg_m-bad-1")
    assert record is not None and record.status == "REJECTED" and record.error_code == "MALFORMED_JSON"
