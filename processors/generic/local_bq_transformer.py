"""ps_type `generic.local_bq_transformer`: a SQL transformation inside the org's dataset, written to a
destination table with a write mode. The data never leaves BigQuery.

    config:
      sql_file: configs/example/finance/sql/subscription_costs.sql    # or `query:` inline
      parameters: {min_cost: 0.01}             # @min_cost; typed: {type: NUMERIC, value: "0.01"}
      dates: {default: yesterday, lookback_days: 1, max_range_days: 366}   # gives @start_date/@end_date
      destination:
        table: subscription_costs_daily
        schema_file: configs/.../schemas/subscription_costs_daily.json   # creates the table if missing
        partition_field: cost_date
        cluster_fields: [provider]
        write_mode: append | overwrite | range_replace | merge
        date_column: cost_date                 # range_replace: the run's dates are replaced
        key_columns: [subscription_id, cost_date]                # merge

The SQL names tables through the identifier placeholders `{project_id}` and `{org_dataset}` (also
`{dataset}`), e.g. FROM `{project_id}.{org_dataset}.saas_subscriptions`; every value is a query
parameter (@org_slug, @run_id, @start_date, @end_date and the configured ones). The SELECT's columns are
matched to the destination's by name (a dry run reads them first): each must exist in the destination,
and every REQUIRED destination column must be produced (`destination.columns` lists them explicitly).

overwrite and range_replace delete and insert in one MERGE statement: a failure leaves the table as it
was, and a re-run of the same range leaves one copy.
"""

from __future__ import annotations

from typing import Any

from convergence.pipeline.context import RunContext, resolve_placeholders
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.pipeline.services import RunServices
from convergence.processors._dates import run_dates
from convergence.processors.generic._bq import sql_names
from convergence.processors.generic._common import (
    identifier,
    invalid,
    resolve_file,
    schema_fields,
    section,
    write_mode,
)
from convergence.processors.sql.templating import (
    parameter_specs,
    query_parameters,
    render_identifiers,
    without_line_comments,
)
from convergence.warehouse.facade import Warehouse


def load_sql(services: RunServices, config: dict[str, Any]) -> str:
    if config.get("sql_file") and config.get("query"):
        raise invalid("give either sql_file or query, not both")
    if config.get("sql_file"):
        return resolve_file(services, config["sql_file"], "sql_file").read_text(encoding="utf-8")
    query = config.get("query")
    if not isinstance(query, str) or not query.strip():
        raise invalid("sql_file or query is required")
    return query


def strip_sql(sql: str) -> str:
    text = sql.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if ";" in text.replace("';'", ""):
        raise invalid("the transformation must be a single SELECT statement")
    return text


async def _columns(warehouse: Warehouse, select: str, params: list[Any], dest_fields: list[dict[str, Any]],
                   wanted: list[str] | None) -> list[str]:
    """The destination columns the SELECT fills, found with a dry run (free, and it checks the SQL): every
    column the SELECT produces must exist in the destination, and no REQUIRED column may be left out."""
    job = await warehouse.run(select, params, dry_run=True)
    produced = [f.name for f in job.schema or []]
    known = {str(f["name"]) for f in dest_fields}
    extra = [c for c in produced if c not in known]
    if extra:
        raise invalid(f"the SELECT produces columns the destination does not have: {extra}")
    if wanted:
        return [identifier(c, "column") for c in wanted]
    required = [str(f["name"]) for f in dest_fields if str(f.get("mode", "")).upper() == "REQUIRED"]
    missing = [c for c in required if c not in produced]
    if missing:
        raise invalid(f"the SELECT does not produce the destination's REQUIRED columns {missing}")
    return [identifier(c, "column") for c in produced]


class LocalBqTransformer:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        services = context.services
        extra = sql_names(context)
        raw_sql = step.config.get("query")  # SQL text keeps its own {identifiers}: not resolved as values
        config = resolve_placeholders({k: v for k, v in step.config.items() if k != "query"},
                                      {**extra, **context.lookup()}, context.outputs)
        if raw_sql is not None:
            config["query"] = raw_sql
        dates_spec = section(config, "dates")
        dates = run_dates(dates_spec, context.parameters)
        destination = section(config, "destination")
        table = identifier(destination.get("table"), "destination table")
        mode = write_mode(destination.get("write_mode"), "append")
        project, dataset = extra["project_id"], extra["org_dataset"]
        table_ref = f"{project}.{dataset}.{table}"

        select = strip_sql(render_identifiers(without_line_comments(load_sql(services, config)), {
            "project_id": project, "org_dataset": dataset, "dataset": dataset}))
        specs = [("org_slug", "STRING", context.org_slug), ("run_id", "STRING", context.run_id),
                 ("start_date", "DATE", dates.start), ("end_date", "DATE", dates.end)]
        taken = {name for name, _, _ in specs}
        for spec in parameter_specs(config.get("parameters")):
            if spec[0] in taken:
                raise invalid(f"parameter @{spec[0]} is provided by the platform and cannot be redefined")
            specs.append(spec)
        params = query_parameters(specs)

        schema_file = destination.get("schema_file")
        schema_path = resolve_file(services, schema_file, "destination.schema_file") if schema_file else None
        warehouse = Warehouse(services, dataset=dataset)
        created = False
        if schema_path is not None:
            change = await warehouse.ensure_table(table, schema_path, create_dataset=True,
                                                  partitioning=destination.get("partition_field"),
                                                  clustering=destination.get("cluster_fields") or None)
            created = change.action == "created"
        elif not await warehouse.table_exists(table_ref):
            raise invalid(f"destination table {dataset}.{table} does not exist and no schema_file is given")
        dest_fields = (list(schema_fields(schema_path)) if schema_path else
                       [f.to_api_repr() for f in (await warehouse.get_table(table_ref)).schema])
        columns = await _columns(warehouse, select, params, dest_fields, destination.get("columns"))
        column_list = ", ".join(f"`{c}`" for c in columns)
        insert = f"INSERT INTO `{table_ref}` ({column_list})\nSELECT {column_list} FROM (\n{select}\n) AS src"  # noqa: S608

        if mode == "append":
            job = await warehouse.run(insert, params)
            rows = int(job.num_dml_affected_rows or 0)
        elif mode == "merge":
            keys = [identifier(k, "key column") for k in destination.get("key_columns") or []]
            if not keys or any(k not in columns for k in keys):
                raise invalid("write_mode merge needs destination.key_columns among the destination columns")
            on = " AND ".join(f"T.`{k}` = S.`{k}`" for k in keys)
            updates = ", ".join(f"`{c}` = S.`{c}`" for c in columns if c not in keys)
            values = ", ".join(f"S.`{c}`" for c in columns)
            matched = f"WHEN MATCHED THEN UPDATE SET {updates}\n" if updates else ""
            sql = (f"MERGE `{table_ref}` AS T USING (\n{select}\n) AS S ON {on}\n{matched}"  # noqa: S608
                   f"WHEN NOT MATCHED THEN INSERT ({column_list}) VALUES ({values})")
            job = await warehouse.run(sql, params)
            rows = int(job.num_dml_affected_rows or 0)
        else:
            # overwrite / range_replace: one MERGE deletes the replaced rows and inserts the new ones, so the
            # change is atomic (a failure leaves the table as it was) without a multi-statement script.
            source = f"SELECT {column_list} FROM (\n{select}\n) AS src"  # noqa: S608 - validated identifiers
            scope, count = "", f"SELECT COUNT(*) AS n FROM `{table_ref}`"  # noqa: S608
            if mode == "range_replace":
                column = identifier(destination.get("date_column"), "date column")
                if column not in columns:
                    raise invalid(f"date_column {column} is not a destination column")
                source += f"\nWHERE src.`{column}` BETWEEN @start_date AND @end_date"
                scope = f" AND T.`{column}` BETWEEN @start_date AND @end_date"
                count += f" WHERE `{column}` BETWEEN @start_date AND @end_date"
            values = ", ".join(f"S.`{c}`" for c in columns)
            sql = (f"MERGE `{table_ref}` AS T USING ({source}) AS S ON FALSE\n"  # noqa: S608
                   f"WHEN NOT MATCHED BY SOURCE{scope} THEN DELETE\n"
                   f"WHEN NOT MATCHED THEN INSERT ({column_list}) VALUES ({values})")
            await warehouse.run(sql, params)
            job = await warehouse.run(count, params)
            rows = int(next(iter(job.result()))[0])
        return {"status": "SUCCESS", "rows_processed": rows, "destination_table": f"{dataset}.{table}",
                "write_mode": mode, "table_created": created, **dates.as_result()}


def get_engine() -> LocalBqTransformer:
    return LocalBqTransformer()
