"""ps_type `anthropic.names`: the Anthropic organization's names, from its Admin API, into
`anthropic_workspaces` and `anthropic_api_keys` (the org's rows replaced at every run), and the views
`anthropic_usage_daily_raw_named`, `anthropic_cost_daily_named` and `anthropic_billed_cost_daily_raw_named`:
those tables with `workspace_name` (and in usage `api_key_name`) next to the ids. The default workspace has
no id (NULL in the reports) and is not listed: its rows are named `Default workspace`.

Lists read (both `after_id`-paged, at most 1,000 per page): `GET /v1/organizations/workspaces` (archived
included) and `GET /v1/organizations/api_keys` (every status). Keys are stored by id, name, workspace,
status and the `partial_key_hint` the API shows; never a key.

Config (all optional): secret_name, anthropic_version, retry/rate_limit, workspaces/api_keys
{table, schema_file}, views (default true).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.processors._llm.client import http_client
from convergence.processors._llm.names import (
    AdminNamesStep,
    NamedView,
    NameTable,
    display_name,
    key_hint,
    list_objects,
    rfc3339,
    unique,
)
from convergence.processors.anthropic._api import admin_headers

PAGE = ("limit", "1000")  # the lists' maximum page size
SCHEMAS = "configs/anthropic/admin/schemas"
DEFAULT_WORKSPACE = "IF(b.workspace_id IS NULL, 'Default workspace', n0.name)"


def workspace_row(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"workspace_id": item["id"], "name": display_name(item.get("name")),
            "created_at": rfc3339(item.get("created_at")), "archived_at": rfc3339(item.get("archived_at"))}


def key_row(item: Mapping[str, Any]) -> dict[str, Any]:
    creator = item.get("created_by") if isinstance(item.get("created_by"), dict) else {}
    workspace = item.get("workspace_id")
    return {"api_key_id": item["id"], "name": display_name(item.get("name")),
            "workspace_id": workspace if isinstance(workspace, str) else None, "status": item.get("status"),
            "partial_key_hint": key_hint(item.get("partial_key_hint")), "created_by_id": creator.get("id"),
            "created_by_type": creator.get("type"), "created_at": rfc3339(item.get("created_at"))}


def _view(base: str, schema: str, with_keys: bool) -> NamedView:
    joins: list[tuple[str, str, str, str | None]] = [("workspaces", "workspace_id", "name", None)]
    if with_keys:
        joins.append(("api_keys", "api_key_id", "name", "api_key_name"))
    return NamedView(base, schema, tuple(joins), {"workspace_name": DEFAULT_WORKSPACE})


class AnthropicNames(AdminNamesStep):
    provider = "anthropic"
    credential_provider = "ANTHROPIC"
    tables = (
        NameTable("workspaces", "anthropic_workspaces", f"{SCHEMAS}/anthropic_workspaces.json"),
        NameTable("api_keys", "anthropic_api_keys", f"{SCHEMAS}/anthropic_api_keys.json"),
    )
    views = (
        _view("anthropic_usage_daily_raw", "configs/anthropic/schemas/anthropic_usage_daily_raw.json", True),
        _view("anthropic_cost_daily", "configs/anthropic/schemas/anthropic_cost_daily.json", False),
        _view("anthropic_billed_cost_daily_raw", "configs/anthropic/schemas/anthropic_billed_cost_daily_raw.json",
              False),
    )

    async def fetch(self, secret: str, config: Mapping[str, Any], context: RunContext) -> dict[str, list[dict]]:
        http = http_client(context, self.provider, config)
        base = f"{context.services.settings.anthropic_base_url}/v1/organizations"
        headers = admin_headers(secret, config)
        workspaces = await list_objects(http, f"{base}/workspaces", [PAGE, ("include_archived", "true")], headers,
                                        "after_id", self.provider)
        keys = await list_objects(http, f"{base}/api_keys", [PAGE], headers, "after_id", self.provider)
        return {"workspaces": unique([workspace_row(w) for w in workspaces], "workspace_id"),
                "api_keys": unique([key_row(k) for k in keys], "api_key_id")}


def get_engine() -> AnthropicNames:
    return AnthropicNames()
