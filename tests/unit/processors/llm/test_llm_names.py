"""Names next to ids, on the emulator and the stand-ins: the `openai.names` / `anthropic.names` steps store
what the providers' Admin API lists serve (every page of them), replace the org's rows at every run, keep
only the redacted key hints the APIs show (never a key, even when a response carries one), and the
`*_named` views put project / user / API key / workspace names next to the ids of the usage and cost rows.
FOCUS SubAccountName falls back to the stored names when the provider's API cannot be read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from convergence.devstack.providers.anthropic_server import ADMIN_KEY as ANTHROPIC_KEY
from convergence.devstack.providers.anthropic_server import AnthropicStandIn
from convergence.devstack.providers.openai_server import ADMIN_KEY as OPENAI_KEY
from convergence.devstack.providers.openai_server import OpenAIStandIn
from convergence.pipeline import RunStatus
from tests.support.llm import DictCredentials, LlmTestServices, make_settings, new_org, rows, run_pipeline
from tests.unit.processors.focus.test_focus import (
    ANTHROPIC_COST,
    D1,
    D2,
    NOW,
    OPENAI_COST,
    anthropic_cost,
    focus_rows,
    openai_cost,
    write,
)

pytestmark = [pytest.mark.emulator]

OPENAI_USAGE = "configs/openai/cost/schemas/openai_usage_daily_raw.json"
ANTHROPIC_USAGE = "configs/anthropic/schemas/anthropic_usage_daily_raw.json"
# 106 projects (two pages of at most 100); proj_a is archived and still has costs.
PROJECTS = {**{f"proj_{i:03d}": f"Project {i}" for i in range(105)}, "proj_a": "Research"}
USERS = {**{f"user_{i:03d}": f"User {i}" for i in range(129)}, "user_nameless": ""}  # two pages
PROJECT_KEYS = {
    "proj_a": {"key_a_user": ("Research notebook", "user_007"), "key_a_svc": ("Research batch", None)},
    "proj_000": {f"key_000_{i:03d}": (f"Key {i}", "user_001") for i in range(120)},  # two pages
}
ADMIN_KEYS = {"key_admin_1": "Ops admin"}
WORKSPACES = {"wrk_1": "Claude Prod", "wrk_2": "Claude Lab"}
ANTHROPIC_KEYS = {**{f"apikey_{i:04d}": (f"Bulk {i}", "wrk_2", "active") for i in range(1003)},  # two pages
                  "apikey_prod": ("Prod backend", "wrk_1", "active"),
                  "apikey_console": ("Console", None, "inactive")}


@pytest.fixture
def bq(bq_client):
    return bq_client


@pytest.fixture
async def env(bq):
    openai = OpenAIStandIn(projects=PROJECTS, archived_projects=["proj_a"], users=USERS, admin_api_keys=ADMIN_KEYS,
                           project_api_keys=PROJECT_KEYS, leak_key_values=True)
    anthropic = AnthropicStandIn(workspaces=WORKSPACES, archived_workspaces=["wrk_2"], api_keys=ANTHROPIC_KEYS,
                                 leak_key_values=True)
    await openai.start()
    await anthropic.start()
    settings = make_settings(bq.project, openai_url=openai.base_url, anthropic_url=anthropic.base_url)
    org = new_org(bq, settings, "names")
    services = LlmTestServices(settings, bq, DictCredentials({(org, "OPENAI"): OPENAI_KEY,
                                                               (org, "ANTHROPIC"): ANTHROPIC_KEY}))
    yield openai, anthropic, services, org
    await services.aclose()
    await openai.stop()
    await anthropic.stop()


def table_text(bq, settings, org: str, table: str) -> str:
    return json.dumps(rows(bq, settings, org, table), default=str)


def by_id(found: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    assert len({r[key] for r in found}) == len(found), "one row per id"
    return {r[key]: r for r in found}


def openai_usage(project: str | None, user: str | None, key: str | None) -> dict[str, Any]:
    return {"org_slug": None, "usage_date": D1, "bucket_start": f"{D1}T00:00:00+00:00",
            "bucket_end": f"{D2}T00:00:00+00:00", "bucket_width": "1d", "endpoint": "completions",
            "project_id": project, "user_id": user, "api_key_id": key, "model": "gpt-4o-2024-08-06",
            "model_base": "gpt-4o", "batch": False, "service_tier": "default", "input_tokens": 10,
            "input_cached_tokens": 0, "input_cache_write_tokens": 0, "input_uncached_tokens": 10, "output_tokens": 5,
            "num_model_requests": 1, "run_id": "seed", "ingested_at": NOW}


def anthropic_usage(workspace: str | None, key: str | None) -> dict[str, Any]:
    return {"org_slug": None, "usage_date": D1, "bucket_start": f"{D1}T00:00:00+00:00",
            "bucket_end": f"{D2}T00:00:00+00:00", "bucket_width": "1d", "api_key_id": key,
            "workspace_id": workspace, "model": "claude-sonnet-4-20250514", "model_base": "claude-sonnet-4",
            "service_tier": "standard", "context_window": "0-200k", "inference_geo": "global",
            "uncached_input_tokens": 10, "cache_read_input_tokens": 0, "cache_creation_5m_input_tokens": 0,
            "cache_creation_1h_input_tokens": 0, "output_tokens": 5, "web_search_requests": 0, "run_id": "seed",
            "ingested_at": NOW}


async def test_openai_names_tables_views_and_focus(env, bq):
    openai, _, services, org = env
    settings = services.settings
    result, observer, _ = await run_pipeline("openai/admin/names", org, services)
    assert result.status is RunStatus.SUCCESS, result.error
    step = result.step("names").result
    assert (step["openai_projects_rows"], step["openai_users_rows"], step["openai_api_keys_rows"]) == (106, 130, 123)

    projects = by_id(rows(bq, settings, org, "openai_projects"), "project_id")
    assert {p: r["name"] for p, r in projects.items()} == PROJECTS  # archived one included
    assert projects["proj_a"]["status"] == "archived" and projects["proj_a"]["archived_at"] is not None
    users = by_id(rows(bq, settings, org, "openai_users"), "user_id")
    assert {u: r["name"] for u, r in users.items()} == {u: n or None for u, n in USERS.items()}
    assert users["user_007"]["email"] == "007@example.com"
    keys = by_id(rows(bq, settings, org, "openai_api_keys"), "api_key_id")
    assert set(keys) == {*ADMIN_KEYS, *PROJECT_KEYS["proj_a"], *PROJECT_KEYS["proj_000"]}
    assert {k: (r["key_kind"], r["project_id"], r["owner_type"], r["owner_id"], r["owner_name"])
            for k, r in keys.items() if not k.startswith("key_000_")} == {
        "key_admin_1": ("admin", None, "user", "user_000", "User 0"),
        "key_a_user": ("project", "proj_a", "user", "user_007", "User 7"),
        "key_a_svc": ("project", "proj_a", "service_account", "svc_acct_key_a_svc", "Research batch (service account)"),
    }
    assert keys["key_a_user"]["redacted_value"] == "sk-proj-k...CRET"  # as the API shows it
    # Every page of every list was read, with the documented cursors.
    assert [c.params("after") for c in openai.calls("/v1/organization/users")] == [[], ["user_099"]]
    assert [c.params("after") for c in openai.calls("/v1/organization/projects/proj_000/api_keys")] == [
        [], ["key_000_099"]]
    # One project key list per project, two pages for proj_000.
    assert len([c for c in openai.requests if c.path.endswith("/api_keys")]) == 106 + 1
    # The responses carried the full key values (`value`): none is stored, nor the admin key anywhere.
    stored = "".join(table_text(bq, settings, org, t) for t in ("openai_projects", "openai_users", "openai_api_keys"))
    assert "0123456789abcdef" not in stored and OPENAI_KEY not in stored
    assert OPENAI_KEY not in observer.dump()

    # Names next to ids in the cost and usage rows; an id no list names keeps a NULL name.
    write(services, org, "openai_cost_daily", OPENAI_COST,
          [openai_cost(D1, "gpt-4o-2024-08-06", input_cost="1", total_cost="1"),
           {**openai_cost(D1, "gpt-4o-2024-08-06", input_cost="2", total_cost="2"), "project_id": "proj_gone"}])
    write(services, org, "openai_usage_daily_raw", OPENAI_USAGE,
          [openai_usage("proj_a", "user_007", "key_a_user"), openai_usage("proj_000", None, "key_admin_1"),
           openai_usage("proj_000", "user_999", "key_unknown"), openai_usage("proj_001", "user_nameless", None)])
    cost = rows(bq, settings, org, "openai_cost_daily_named", order="project_id")
    assert [(r["project_id"], r["project_name"], str(r["total_cost"])) for r in cost] == [
        ("proj_a", "Research", "1.000000000"), ("proj_gone", None, "2.000000000")]
    usage = rows(bq, settings, org, "openai_usage_daily_raw_named", order="project_id, user_id")
    assert [(r["project_name"], r["user_name"], r["api_key_name"]) for r in usage] == [
        ("Project 0", None, "Ops admin"), ("Project 0", None, None), ("Project 1", "nameless@example.com", None),
        ("Research", "User 7", "Research notebook")]
    assert len(rows(bq, settings, org, "openai_billed_cost_daily_raw_named")) == 0  # resolves with no rows

    # A rerun replaces the org's rows: renamed, removed and added objects, no second copy.
    openai.projects["proj_a"] = "Research (renamed)"
    del openai.users["user_128"]
    openai.project_api_keys["proj_a"]["key_a_new"] = ("New key", "user_002")
    result, _, _ = await run_pipeline("openai/admin/names", org, services)
    assert result.status is RunStatus.SUCCESS, result.error
    assert by_id(rows(bq, settings, org, "openai_projects"), "project_id")["proj_a"]["name"] == "Research (renamed)"
    assert len(by_id(rows(bq, settings, org, "openai_users"), "user_id")) == 129
    assert len(by_id(rows(bq, settings, org, "openai_api_keys"), "api_key_id")) == 124

    # A list that fails after retries fails the step and leaves the tables as they were.
    openai.inject(400, path="/v1/organization/admin_api_keys")
    result, _, _ = await run_pipeline("openai/admin/names", org, services)
    assert result.status is not RunStatus.SUCCESS
    assert len(rows(bq, settings, org, "openai_api_keys")) == 124

    # FOCUS: with the API unreadable (a refused key), SubAccountName comes from the stored names.
    services.credentials.secrets[(org, "OPENAI")] = "sk-admin-refused-0000000000000000"
    result, observer, _ = await run_pipeline("focus/cost/openai", org, services, {"start_date": D1, "end_date": D1})
    assert result.status is RunStatus.SUCCESS, result.error
    assert result.step("map_openai").result["sub_account_names_from"].startswith("names table openai_projects (")
    assert {r["SubAccountId"]: r["SubAccountName"] for r in focus_rows(bq, settings, org)} == {
        "proj_a": "Research (renamed)", "proj_gone": "proj_gone"}
    assert "refused-0000" not in observer.dump()


async def test_anthropic_names_tables_views_and_focus(env, bq):
    _, anthropic, services, org = env
    settings = services.settings
    result, observer, _ = await run_pipeline("anthropic/admin/names", org, services)
    assert result.status is RunStatus.SUCCESS, result.error
    step = result.step("names").result
    assert (step["anthropic_workspaces_rows"], step["anthropic_api_keys_rows"]) == (2, 1005)

    workspaces = by_id(rows(bq, settings, org, "anthropic_workspaces"), "workspace_id")
    assert {w: r["name"] for w, r in workspaces.items()} == WORKSPACES
    assert workspaces["wrk_2"]["archived_at"] is not None and workspaces["wrk_1"]["archived_at"] is None
    keys = by_id(rows(bq, settings, org, "anthropic_api_keys"), "api_key_id")
    assert {k: (r["name"], r["workspace_id"], r["status"]) for k, r in keys.items()} == ANTHROPIC_KEYS
    assert keys["apikey_prod"]["partial_key_hint"] == "sk-ant-api03-api...T-AA"
    assert keys["apikey_prod"]["created_by_id"] == "user_01StandInAdmin"
    calls = anthropic.calls("/v1/organizations/api_keys")
    assert [(c.params("limit"), c.params("after_id")) for c in calls] == [
        (["1000"], []), (["1000"], [sorted(ANTHROPIC_KEYS)[999]])]
    assert all(c.headers.get("anthropic-version") for c in calls)
    stored = table_text(bq, settings, org, "anthropic_api_keys") + table_text(bq, settings, org, "anthropic_workspaces")
    assert "0123456789abcdef" not in stored and ANTHROPIC_KEY not in stored and ANTHROPIC_KEY not in observer.dump()

    write(services, org, "anthropic_usage_daily_raw", ANTHROPIC_USAGE,
          [anthropic_usage("wrk_1", "apikey_prod"), anthropic_usage(None, "apikey_console"),
           anthropic_usage(None, None)])
    write(services, org, "anthropic_cost_daily", ANTHROPIC_COST,
          [anthropic_cost(D1, "claude-sonnet-4-20250514", uncached_input_tokens=1000, uncached_input_cost="1",
                          total_cost="1"),
           {**anthropic_cost(D1, "claude-sonnet-4-20250514", uncached_input_tokens=2000, uncached_input_cost="2",
                             total_cost="2"), "workspace_id": None}])
    usage = rows(bq, settings, org, "anthropic_usage_daily_raw_named", order="workspace_id, api_key_id")
    assert [(r["workspace_id"], r["workspace_name"], r["api_key_name"]) for r in usage] == [
        (None, "Default workspace", None), (None, "Default workspace", "Console"),
        ("wrk_1", "Claude Prod", "Prod backend")]
    cost = rows(bq, settings, org, "anthropic_cost_daily_named", order="workspace_id")
    assert [(r["workspace_id"], r["workspace_name"]) for r in cost] == [(None, "Default workspace"),
                                                                         ("wrk_1", "Claude Prod")]

    # FOCUS with the API readable: SubAccountName is the name the names table holds (the default workspace
    # has no id, so no sub-account).
    result, _, _ = await run_pipeline("focus/cost/anthropic", org, services, {"start_date": D1, "end_date": D1})
    assert result.status is RunStatus.SUCCESS, result.error
    assert {r["SubAccountId"]: r["SubAccountName"] for r in focus_rows(bq, settings, org)} == {
        None: None, "wrk_1": "Claude Prod"}


async def test_stand_ins_serve_users_and_keys_in_the_admin_api_wire_format(env):
    import aiohttp

    openai, anthropic, _, _ = env
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {OPENAI_KEY}"}
        async with http.get(f"{openai.base_url}/v1/organization/users", headers=headers) as response:
            page = await response.json()
        assert page["object"] == "list" and len(page["data"]) == 20 and page["has_more"] is True
        assert set(page["data"][0]) == {"object", "id", "name", "email", "role", "added_at"}
        assert page["data"][0]["object"] == "organization.user" and page["last_id"] == "user_019"
        async with http.get(f"{openai.base_url}/v1/organization/admin_api_keys", headers=headers) as response:
            key = (await response.json())["data"][0]
        assert key["object"] == "organization.admin_api_key" and key["owner"]["type"] == "user"
        assert key["redacted_value"].startswith("sk-admin-") and "..." in key["redacted_value"]
        async with http.get(f"{openai.base_url}/v1/organization/projects/proj_a/api_keys", headers=headers) as response:
            data = (await response.json())["data"]
        assert {k["object"] for k in data} == {"organization.project.api_key"}
        assert {k["owner"]["type"] for k in data} == {"user", "service_account"}
        async with http.get(f"{openai.base_url}/v1/organization/projects/proj_nope/api_keys",
                            headers=headers) as response:
            assert response.status == 404 and "error" in await response.json()
        async with http.get(f"{openai.base_url}/v1/organization/users", headers=headers,
                            params={"limit": "101"}) as response:
            assert response.status == 400 and (await response.json())["error"]["param"] == "limit"

        headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
        async with http.get(f"{anthropic.base_url}/v1/organizations/api_keys", headers=headers,
                            params={"workspace_id": "wrk_1"}) as response:
            page = await response.json()
        assert [k["id"] for k in page["data"]] == ["apikey_prod"] and page["has_more"] is False
        assert set(page["data"][0]) >= {"id", "type", "name", "workspace_id", "created_at", "created_by",
                                        "partial_key_hint", "status"}
        async with http.get(f"{anthropic.base_url}/v1/organizations/api_keys", headers=headers,
                            params={"status": "nope"}) as response:
            assert response.status == 400 and (await response.json())["type"] == "error"
