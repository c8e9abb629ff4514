"""Sub-account names from the providers' Admin APIs, on the emulator and the stand-ins: OpenAI project names
(`GET /v1/organization/projects`, paged by `after`, archived ones included) and Anthropic workspace names
(`GET /v1/organizations/workspaces`, paged by `after_id`) reach SubAccountName; the step configuration names
what the API does not; the id is the fallback; an API failure falls back to configuration without failing
the mapping, and the admin key appears nowhere in the results."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from convergence.devstack.providers.anthropic_server import ADMIN_KEY as ANTHROPIC_KEY
from convergence.devstack.providers.anthropic_server import AnthropicStandIn
from convergence.devstack.providers.openai_server import ADMIN_KEY as OPENAI_KEY
from convergence.devstack.providers.openai_server import OpenAIStandIn
from convergence.pipeline import Executor, PipelineLoader, ProcessorRegistry, RunContext, RunStatus
from convergence.processors.focus.conformance import check, format_report
from tests.support.llm import CONFIGS, DictCredentials, LlmTestServices, RecordingObserver, make_settings, new_org
from tests.unit.processors.focus.test_focus import D1, D2, OPENAI_BILLED, focus_rows, openai_billed, seed_sources, write

pytestmark = [pytest.mark.emulator]

PARAMS = {"start_date": D1, "end_date": D2}
# 106 projects: two pages of at most 100. proj_a is archived (it still has costs).
PROJECTS = {**{f"proj_{i:03d}": f"Project {i}" for i in range(105)}, "proj_a": "Research (from the API)"}
WORKSPACES = {"wrk_1": "Claude Prod (from the API)", "wrk_other": "Other"}


@pytest.fixture
def bq(bq_client):
    return bq_client


@pytest.fixture
async def standins():
    openai = OpenAIStandIn(projects=PROJECTS, archived_projects=["proj_a"])
    anthropic = AnthropicStandIn(workspaces=WORKSPACES)
    await openai.start()
    await anthropic.start()
    yield openai, anthropic
    await openai.stop()
    await anthropic.stop()


async def run_with(path: str, org: str, services: Any, names: dict[str, Any]) -> tuple[Any, RecordingObserver]:
    config = PipelineLoader(CONFIGS).load(path)
    step = config.steps[0]
    config = config.model_copy(update={"steps": [step.model_copy(update={"config": {**step.config, **names}})]})
    context = RunContext(org_slug=org, run_id=f"run_{uuid.uuid4().hex[:12]}", pipeline_id=config.pipeline_id,
                         parameters=dict(PARAMS), services=services)
    observer = RecordingObserver()
    result = await Executor(ProcessorRegistry(), observer=observer).run(config, context)
    assert result.status is RunStatus.SUCCESS, result.error
    return result.steps[0], observer


def sub_names(bq, settings, org: str, source: str) -> dict[str, str]:
    return {r["SubAccountId"]: r["SubAccountName"] for r in focus_rows(bq, settings, org)
            if r["x_SourcePipeline"] == source}


async def test_admin_api_names_then_configuration_then_the_id(bq, standins):
    openai, anthropic = standins
    settings = make_settings(bq.project, openai_url=openai.base_url, anthropic_url=anthropic.base_url)
    org = new_org(bq, settings, "focus_pnames")
    services = LlmTestServices(settings, bq, DictCredentials({(org, "OPENAI"): OPENAI_KEY,
                                                               (org, "ANTHROPIC"): "sk-ant-admin01-wrong-key-00"}))
    try:
        seed_sources(services, org)  # OpenAI proj_a, Anthropic wrk_1
        write(services, org, "openai_billed_cost_daily_raw", OPENAI_BILLED, [
            {**openai_billed(D1, "gpt-4o-2024-08-06, input", "gpt-4o-2024-08-06", "input", "0.5", "1000"),
             "project_id": project} for project in ("proj_b", "proj_z")])
        config = {"sub_account_names": {"proj_a": "Research (config)", "proj_b": "Billing team (config)"}}

        step, observer = await run_with("focus/cost/openai", org, services, config)
        assert step.result["sub_account_names_from"] == "provider API (106 named)"
        assert sub_names(bq, settings, org, "openai") == {
            "proj_a": "Research (from the API)",   # the API over configuration, archived included
            "proj_b": "Billing team (config)",     # not in the API: configuration
            "proj_z": "proj_z",                    # named nowhere: the id
        }
        calls = openai.calls("/v1/organization/projects")
        assert [(c.params("limit"), c.params("include_archived"), c.params("after")) for c in calls] == [
            (["100"], ["true"], []), (["100"], ["true"], [sorted(PROJECTS)[99]])]
        assert all(c.authorized for c in calls) and OPENAI_KEY not in observer.dump()

        # Anthropic with a key the stand-in refuses: configuration names, the mapping still succeeds.
        step, observer = await run_with("focus/cost/anthropic", org, services,
                                        {"sub_account_names": {"wrk_1": "Claude Prod (config)"}})
        assert step.result["sub_account_names_from"].startswith("configuration (")
        assert [c.status for c in anthropic.calls("/v1/organizations/workspaces")] == [401]
        assert sub_names(bq, settings, org, "anthropic") == {"wrk_1": "Claude Prod (config)"}
        assert "wrong-key" not in observer.dump()

        # With the right key: the workspace name from the API.
        services.credentials.secrets[(org, "ANTHROPIC")] = ANTHROPIC_KEY
        step, _ = await run_with("focus/cost/anthropic", org, services,
                                 {"sub_account_names": {"wrk_1": "Claude Prod (config)"}})
        assert step.result["sub_account_names_from"] == "provider API (2 named)"
        assert sub_names(bq, settings, org, "anthropic") == {"wrk_1": "Claude Prod (from the API)"}
        assert anthropic.calls("/v1/organizations/workspaces")[-1].headers.get("anthropic-version")

        # names_from_provider: false asks nobody.
        before = len(openai.calls("/v1/organization/projects"))
        step, _ = await run_with("focus/cost/openai", org, services, {**config, "names_from_provider": False})
        assert step.result["sub_account_names_from"] == "configuration"
        assert len(openai.calls("/v1/organization/projects")) == before
        assert sub_names(bq, settings, org, "openai")["proj_a"] == "Research (config)"

        report = check(bq, settings, org)
        assert report.ok, format_report(report)
    finally:
        await services.aclose()


async def test_stand_ins_list_names_in_the_admin_api_wire_format(standins):
    import aiohttp

    openai, anthropic = standins
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {OPENAI_KEY}"}
        async with http.get(f"{openai.base_url}/v1/organization/projects", headers=headers) as response:
            page = await response.json()
        assert page["object"] == "list" and len(page["data"]) == 20 and page["has_more"] is True
        first = page["data"][0]
        assert set(first) == {"id", "object", "name", "created_at", "archived_at", "status"}
        assert first["object"] == "organization.project" and first["status"] == "active"
        assert page["first_id"] == first["id"] and page["last_id"] == page["data"][-1]["id"]
        assert "proj_a" not in {p["id"] for p in page["data"]}  # archived: only with include_archived
        async with http.get(f"{openai.base_url}/v1/organization/projects", headers=headers,
                            params={"limit": "101"}) as response:
            assert response.status == 400 and (await response.json())["error"]["param"] == "limit"

        headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
        async with http.get(f"{anthropic.base_url}/v1/organizations/workspaces", headers=headers,
                            params={"limit": "1"}) as response:
            page = await response.json()
        assert page["has_more"] is True and page["first_id"] == page["last_id"] == "wrk_1"
        assert set(page["data"][0]) == {"id", "type", "name", "created_at", "archived_at", "display_color"}
        assert page["data"][0]["type"] == "workspace"
        async with http.get(f"{anthropic.base_url}/v1/organizations/workspaces", headers=headers,
                            params={"after_id": "wrk_1"}) as response:
            page = await response.json()
        assert [w["id"] for w in page["data"]] == ["wrk_other"] and page["has_more"] is False
