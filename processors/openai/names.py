"""ps_type `openai.names`: the OpenAI organization's names, from its Admin API, into `openai_projects`,
`openai_users` and `openai_api_keys` (the org's rows replaced at every run), and the views
`openai_usage_daily_raw_named`, `openai_cost_daily_named` and `openai_billed_cost_daily_raw_named`: those
tables with `project_name` (and in usage `user_name`, the email when the user has no name, and
`api_key_name`) next to the ids.

Lists read (all `after`-paged, at most 100 per page): `GET /v1/organization/projects` (archived included:
they still have costs), `GET /v1/organization/users`, `GET /v1/organization/admin_api_keys` and, per
project, `GET /v1/organization/projects/{project_id}/api_keys`. Keys are stored by id, name, owner and the
`redacted_value` the API shows; never a key.

Config (all optional): secret_name, retry/rate_limit, projects/users/api_keys {table, schema_file},
views (default true).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from convergence.pipeline.context import RunContext
from convergence.processors._llm.client import http_client
from convergence.processors._llm.names import (
    AdminNamesStep,
    NamedView,
    NameTable,
    display_name,
    key_hint,
    list_objects,
    unique,
    unix_time,
)
from convergence.processors.openai._api import bearer_headers

PAGE = ("limit", "100")  # the lists' maximum page size
SCHEMAS = "configs/openai/admin/schemas"


def project_row(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"project_id": item["id"], "name": display_name(item.get("name")), "status": item.get("status"),
            "created_at": unix_time(item.get("created_at")), "archived_at": unix_time(item.get("archived_at"))}


def user_row(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"user_id": item["id"], "name": display_name(item.get("name")), "email": item.get("email"),
            "role": item.get("role"), "added_at": unix_time(item.get("added_at"))}


def key_row(item: Mapping[str, Any], kind: str, project_id: str | None) -> dict[str, Any]:
    owner = item.get("owner") if isinstance(item.get("owner"), dict) else {}
    owner_type = owner.get("type")
    # Project keys nest the owner under `user` / `service_account`; admin keys carry it flat.
    who = owner.get(owner_type) if isinstance(owner.get(owner_type), dict) else owner
    return {"api_key_id": item["id"], "name": display_name(item.get("name")), "key_kind": kind,
            "project_id": project_id, "redacted_value": key_hint(item.get("redacted_value")),
            "owner_type": owner_type, "owner_id": who.get("id"), "owner_name": display_name(who.get("name")),
            "created_at": unix_time(item.get("created_at")), "last_used_at": unix_time(item.get("last_used_at"))}


class OpenAINames(AdminNamesStep):
    provider = "openai"
    credential_provider = "OPENAI"
    tables = (
        NameTable("projects", "openai_projects", f"{SCHEMAS}/openai_projects.json"),
        NameTable("users", "openai_users", f"{SCHEMAS}/openai_users.json"),
        NameTable("api_keys", "openai_api_keys", f"{SCHEMAS}/openai_api_keys.json"),
    )
    views = (
        NamedView("openai_usage_daily_raw", "configs/openai/cost/schemas/openai_usage_daily_raw.json",
                  (("projects", "project_id", "name", "project_name"), ("users", "user_id", "name", None),
                   ("api_keys", "api_key_id", "name", "api_key_name")),
                  # A user without a name reads as their email.
                  {"user_name": "IFNULL(n1.name, n1.email)"}),
        NamedView("openai_cost_daily", "configs/openai/cost/schemas/openai_cost_daily.json",
                  (("projects", "project_id", "name", "project_name"),)),
        NamedView("openai_billed_cost_daily_raw", "configs/openai/cost/schemas/openai_billed_cost_daily_raw.json",
                  (("projects", "project_id", "name", "project_name"),)),
    )

    async def fetch(self, secret: str, config: Mapping[str, Any], context: RunContext) -> dict[str, list[dict]]:
        http = http_client(context, self.provider, config)
        base = f"{context.services.settings.openai_base_url}/v1/organization"
        headers = bearer_headers(secret)
        projects = await list_objects(http, f"{base}/projects", [PAGE, ("include_archived", "true")], headers,
                                      "after", self.provider)
        users = await list_objects(http, f"{base}/users", [PAGE], headers, "after", self.provider)
        keys = [key_row(k, "admin", None) for k in await list_objects(
            http, f"{base}/admin_api_keys", [PAGE, ("order", "asc")], headers, "after", self.provider)]
        for project in projects:
            url = f"{base}/projects/{quote(project['id'], safe='')}/api_keys"
            keys += [key_row(k, "project", project["id"])
                     for k in await list_objects(http, url, [PAGE], headers, "after", self.provider)]
        return {"projects": unique([project_row(p) for p in projects], "project_id"),
                "users": unique([user_row(u) for u in users], "user_id"),
                "api_keys": unique(keys, "api_key_id")}


def get_engine() -> OpenAINames:
    return OpenAINames()
