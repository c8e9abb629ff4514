"""The providers' Admin API object lists (projects, users, API keys, workspaces): every page of one list.

Both providers page these lists the same way: a body with a `data` list and `has_more`; the next page is
asked with the last object's id (`last_id`) as the cursor (OpenAI `after`, Anthropic `after_id`). A page
without a `data` list, or one that says has_more without a new `last_id`, is malformed.

`AdminNamesStep` is the `*.names` step: it reads every list, then replaces the org's rows of each names
table in ONE overwrite write (a failure before the writes changes nothing), and (re)creates the
`{table}_named` views: the cost and usage tables with the names next to the ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, PermanentStepError
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.pipeline.services import RunServices
from convergence.processors._llm.bq import Warehouse, identifier
from convergence.processors._llm.calc import TableSpec
from convergence.processors._llm.client import MalformedPage, provider_secret
from convergence.processors._llm.params import invalid
from convergence.processors._llm.values import BadValue, parse_rfc3339

MAX_NAME_PAGES = 1_000
MAX_NAME_LENGTH = 200


async def list_objects(http: Any, url: str, params: Sequence[tuple[str, str]], headers: Mapping[str, str],
                       cursor_param: str, provider: str) -> list[dict[str, Any]]:
    """Every object (a dict with a string `id`) of an Admin API list, in the order served."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    seen: set[str] = set()
    for number in range(1, MAX_NAME_PAGES + 1):
        query = [*params, *([(cursor_param, cursor)] if cursor else [])]
        body, _ = await http.request_json("GET", url, params=query, headers=headers)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise MalformedPage(f"{provider}: page {number} from {url} has no 'data' list")
        items += [item for item in body["data"] if isinstance(item, dict) and isinstance(item.get("id"), str)]
        if not body.get("has_more"):
            return items
        cursor = body.get("last_id")
        if not isinstance(cursor, str) or not cursor or cursor in seen:
            raise MalformedPage(f"{provider}: page {number} from {url} says has_more without a new last_id")
        seen.add(cursor)
    raise MalformedPage(f"{provider}: more than {MAX_NAME_PAGES} pages from {url}; refusing to continue")


def display_name(value: Any) -> str | None:
    """A listed name as stored: stripped, at most MAX_NAME_LENGTH characters; None when empty."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:MAX_NAME_LENGTH]


async def listed_names(http: Any, url: str, params: Sequence[tuple[str, str]], headers: Mapping[str, str],
                       cursor_param: str, provider: str) -> dict[str, str]:
    """{id: name} of every named object of an Admin API list."""
    names: dict[str, str] = {}
    for item in await list_objects(http, url, params, headers, cursor_param, provider):
        name = display_name(item.get("name"))
        if name is not None:
            names[item["id"]] = name
    return names


# -- the names step: lists -> one overwrite write per table -> views with names next to ids -------------

def key_hint(value: Any) -> str | None:
    """A key's redacted hint as the API shows it (`sk-...abcd`), or None: anything that is not visibly
    redacted (no `...` or `*`, or longer than a hint) could be a key and is not kept."""
    if not isinstance(value, str) or len(value) > 40 or not ("..." in value or "*" in value):
        return None
    return value


def unix_time(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat()


def rfc3339(value: Any) -> str | None:
    try:
        return parse_rfc3339(value, "timestamp").isoformat()
    except BadValue:
        return None


@dataclass(frozen=True)
class NameTable:
    role: str          # key of the step config ({table, schema_file}) and of fetch()'s result
    table: str
    schema_file: str


@dataclass(frozen=True)
class NamedView:
    """`{base}_named`: every column of a cost or usage table, and the names of its ids (LEFT JOINs on the
    names tables: an id no list names keeps a NULL name)."""

    base: str                 # table the view reads
    base_schema: str
    # (names role, id column of base and names table, name column, alias or None: joined as n0, n1, ...)
    joins: Sequence[tuple[str, str, str, str | None]]
    extra: Mapping[str, str] = field(default_factory=dict)  # alias -> SQL over `b.` and the joined names


class AdminNamesStep:
    provider = ""              # HTTP client label, e.g. "openai"
    credential_provider = ""   # org_integration_credentials.provider
    tables: Sequence[NameTable] = ()
    views: Sequence[NamedView] = ()

    async def fetch(self, secret: str, config: Mapping[str, Any], context: RunContext) -> dict[str, list[dict]]:
        raise NotImplementedError

    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        config = context.resolve(step.config)
        make_views = config.get("views", True)
        if not isinstance(make_views, bool):
            raise invalid("views must be true or false")
        secret = await provider_secret(config, context, self.credential_provider)
        listed = await self.fetch(secret, config, context)  # every list first: a failure writes nothing
        warehouse = Warehouse(context.services, context.org_slug)
        now = datetime.now(UTC).isoformat()
        specs = {t.role: TableSpec(config.get(t.role), t.table, t.schema_file) for t in self.tables}
        result: dict[str, Any] = {"status": "SUCCESS"}
        total = 0
        for role, spec in specs.items():
            rows = [{**row, "org_slug": context.org_slug, "run_id": context.run_id, "ingested_at": now}
                    for row in listed[role]]
            await spec.ensure(warehouse)
            written = await _write(context.services, warehouse.dataset, spec.table, rows, spec.schema_file,
                                   context.org_slug)
            result[f"{spec.table}_rows"] = written
            total += written
        if make_views:
            result["views"] = ",".join([await self._view(warehouse, view, specs) for view in self.views])
        return {**result, "rows_processed": total}

    async def _view(self, warehouse: Warehouse, view: NamedView, specs: Mapping[str, TableSpec]) -> str:
        # A table the org never loaded is created empty, so the view (and its readers) always resolve.
        await warehouse.ensure_table(view.base, view.base_schema)
        selects = ["b.*"]
        joins = []
        for n, (role, id_column, name_column, alias) in enumerate(view.joins):
            spec = specs[role]
            key = identifier(id_column, "column")
            joins.append(f"LEFT JOIN {warehouse.ref(spec.table)} n{n} ON n{n}.org_slug = b.org_slug "
                         f"AND n{n}.{key} = b.{key}")
            if alias is not None:
                selects.append(f"n{n}.{identifier(name_column, 'column')} AS {identifier(alias, 'column')}")
        selects += [f"{sql} AS {identifier(alias, 'column')}" for alias, sql in view.extra.items()]
        name = f"{view.base}_named"
        sql = (f"CREATE OR REPLACE VIEW {warehouse.ref(name)} AS\nSELECT {', '.join(selects)}\n"  # noqa: S608
               f"FROM {warehouse.ref(view.base)} b\n" + "\n".join(joins))
        await warehouse.query(sql, {})
        # The view as BigQuery resolved it: every name column must be there (its readers select them).
        view_table = await warehouse.get_table(warehouse.table_id(name))
        wanted = {alias for *_, alias in view.joins if alias} | set(view.extra)
        missing = sorted(wanted - {f.name for f in view_table.schema})
        if missing:
            raise PermanentStepError(f"view {name} was created without the name columns {missing}",
                                     code=ErrorCode.WAREHOUSE_ERROR)
        return name


async def _write(services: RunServices, dataset: str, table: str, rows: list[dict[str, Any]], schema_file: str,
                 org_slug: str) -> int:
    """ONE overwrite write: the org's rows of the table become exactly these (an empty list clears them)."""
    result = await asyncio.to_thread(services.writer.write, dataset, table, rows, mode="overwrite",
                                     org_slug=org_slug, schema_path=schema_file)
    return int(getattr(result, "rows_written", len(rows)))


def unique(rows: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """One row per id (the last one listed), so a names join never multiplies cost rows."""
    return list({row[key]: row for row in rows}.values())
