"""ps_type `generic.procedure_executor`: CALL a stored procedure with typed arguments (used by
the SaaS subscription cost pipeline).

    config:
      procedure: calculate_subscription_cost     # routine id; file configs/system/procedures/*/<id>.sql
      dataset: "{central_dataset}"                # where the routine lives (default: the central dataset)
      create_if_missing: true                     # create it from its file when it does not exist yet
      ensure_tables:                              # created in the org's dataset when missing
        - {table: saas_subscriptions, schema_file: configs/saas_subscription/schemas/saas_subscriptions.json}
      dates: {default: current_month, max_range_days: 366}     # defines {start_date} and {end_date}
      arguments:                                  # in the procedure's order; values may use placeholders
        - {name: p_project_id, type: STRING, value: "{project_id}"}
        - {name: p_dataset_id, type: STRING, value: "{org_dataset}"}
        - {name: p_start_date, type: DATE, value: "{start_date}"}
      rows_column: rows_written                   # column of the procedure's last SELECT = rows_processed

Names usable in values: the run's parameters and variables, `org_slug`, `run_id`, `project_id` (the
service project), `org_dataset`, `central_dataset`, `start_date`, `end_date`. Arguments reach BigQuery
as typed literals built from validated values (CALL takes no query parameters on the emulator), never
as pasted text.
"""

from __future__ import annotations

from typing import Any

from convergence.pipeline.context import RunContext, resolve_placeholders
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.processors._dates import run_dates
from convergence.processors.generic._bq import sql_names
from convergence.processors.generic._common import (
    bool_option,
    identifier,
    invalid,
    resolve_file,
    section,
)
from convergence.processors.sql.templating import parameter_specs
from convergence.warehouse.catalog import ProcedureNotFound, missing_routine
from convergence.warehouse.facade import Warehouse


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class ProcedureExecutor:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        services = context.services
        names = {**sql_names(context), **context.lookup()}
        dates_spec = resolve_placeholders(dict(step.config.get("dates") or {}), names, context.outputs)
        dates = run_dates(dates_spec, context.parameters)
        names.update({"start_date": dates.start.isoformat(), "end_date": dates.end.isoformat()})
        config = resolve_placeholders({k: v for k, v in step.config.items() if k != "dates"}, names,
                                      context.outputs)
        procedure = identifier(config.get("procedure"), "procedure")
        dataset = identifier(config.get("dataset") or services.settings.central_dataset, "dataset")
        arguments = parameter_specs(config.get("arguments") or [])
        warehouse = Warehouse(services, context.org_slug)
        catalog = warehouse.procedures(dataset)

        created_tables = []
        for entry in config.get("ensure_tables") or []:
            spec = section({"t": entry}, "t")
            table = identifier(spec.get("table"), "table")
            path = resolve_file(services, spec.get("schema_file"), "ensure_tables.schema_file")
            change = await warehouse.ensure_table(table, path, dataset=names["org_dataset"], create_dataset=True,
                                                  partitioning=spec.get("partition_field"),
                                                  clustering=spec.get("cluster_fields") or None)
            if change.action == "created":
                created_tables.append(table)

        created_procedure = False
        try:
            rows = await warehouse.blocking(catalog.call, procedure, arguments)
        except Exception as error:
            if not (bool_option(config, "create_if_missing", True) and missing_routine(error)):
                raise
            try:
                await warehouse.blocking(catalog.put, procedure)
            except ProcedureNotFound:
                raise invalid(f"procedure {dataset}.{procedure} does not exist and has no file to create it "
                              "from") from None
            created_procedure = True
            rows = await warehouse.blocking(catalog.call, procedure, arguments)

        result: dict[str, Any] = {"status": "SUCCESS", "procedure": f"{dataset}.{procedure}", **dates.as_result()}
        last = rows[-1] if rows else {}
        rows_column = config.get("rows_column", "rows_written")
        result["rows_processed"] = int(last.get(rows_column) or 0) if rows_column in last else len(rows)
        for key, value in list(last.items())[:10]:
            if key != rows_column:
                result.setdefault(key, _scalar(value))
        if created_tables:
            result["tables_created"] = ", ".join(created_tables)
        if created_procedure:
            result["procedure_created"] = True
        return result


def get_engine() -> ProcedureExecutor:
    return ProcedureExecutor()
