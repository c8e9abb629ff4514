"""ps_type `gcp.bq_etl`: copy rows from a customer's BigQuery (their billing export) into the org's dataset,
with two clients:

- source: a BigQuery client on the customer's project with the customer's service account
  (`use_org_credentials: true`; the key comes through convergence/extractors/credentials.py, GCP_SA), which
  runs the query;
- destination: the service's own client, which writes the rows into `{org}_{env}.<table>`.

    config:
      source:
        use_org_credentials: true
        credential: {provider: GCP_SA}
        project: "{billing_export_project}"       # empty: the service account's project
        dataset: billing_export
        table: "gcp_billing_export_v1_*"            # a trailing * selects a wildcard table
        query_file: configs/gcp/cost/sql/billing_export.sql   # or `query:`
        parameters: {}                              # more @parameters (typed like the transformer's)
        partition_margin_days: 2                    # prune ingestion-time partitions; null disables
        page_size: 5000                             # rows per page read from the source
      dates: {default: yesterday, lookback_days: 3, max_range_days: 93}   # @start_date / @end_date
      destination:
        table: gcp_billing_daily_raw
        schema_file: configs/gcp/cost/schemas/billing_cost.json
        write_mode: range_replace                   # append | overwrite | range_replace | merge
        date_column: usage_date
        partition_field: usage_date
        cluster_fields: [service_id, project_id]
        batch_size: 5000                            # rows per load job into the staging table

The query may use only the identifier placeholders `{source_table}`, `{source_project}`,
`{source_dataset}` and `{partition_filter}`; values are query parameters (@start_date, @end_date,
@org_slug and `source.parameters`). Rows are read page by page and written in batches, so memory is
about one page plus one Writer batch whatever the size of the copy, and the write is atomic (a staged
MERGE): a copy that fails half-way leaves the destination as it was.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

from convergence.extractors.credentials import resolve_credential
from convergence.pipeline.context import RunContext, resolve_placeholders
from convergence.pipeline.models import StepConfig
from convergence.pipeline.results import StepOutput
from convergence.processors._dates import run_dates
from convergence.processors.gcp._auth import ServiceAccountKey, credentials_for
from convergence.processors.generic._common import (
    bool_option,
    identifier,
    int_option,
    invalid,
    project_id,
    resolve_file,
    section,
    write_mode,
)
from convergence.processors.generic._sink import TableSink
from convergence.processors.sql.templating import (
    parameter_specs,
    query_parameters,
    render_identifiers,
    without_line_comments,
)
from convergence.warehouse.facade import Warehouse

BIGQUERY_SCOPE = "https://www.googleapis.com/auth/bigquery"
_SOURCE_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1022}\*?$")
_RESERVED = frozenset({"start_date", "end_date", "org_slug"})


async def _partition_filter(source: Warehouse, table_ref: str, margin_days: int | None) -> str:
    """A constant filter on _PARTITIONTIME (so BigQuery prunes partitions) when the source is partitioned
    by ingestion time; billing export wildcards are assumed to be. Rows for a usage day are exported at
    or after it, so partitions older than the range minus a margin cannot hold them."""
    if margin_days is None:
        return "TRUE"
    if not table_ref.endswith("*"):
        partitioning = (await source.get_table(table_ref)).time_partitioning
        if partitioning is None or partitioning.field is not None:
            return "TRUE"
    return f"_PARTITIONTIME >= TIMESTAMP(DATE_SUB(@start_date, INTERVAL {int(margin_days)} DAY))"


class BigQueryEtl:
    async def execute(self, step: StepConfig, context: RunContext) -> StepOutput:
        services = context.services
        settings = services.settings
        source_raw = dict(step.config.get("source") or {})
        raw_query = source_raw.pop("query", None)  # SQL keeps its own {identifiers}
        config = resolve_placeholders({**step.config, "source": source_raw}, context.lookup(), context.outputs)
        source = section(config, "source")
        dates_spec = section(config, "dates")
        dates = run_dates(dates_spec, context.parameters)

        # Source side: the customer's service account and project.
        credentials = None
        key = None
        if bool_option(source, "use_org_credentials", True):
            spec = section(source, "credential")
            credential = await resolve_credential(context, spec.get("provider", "GCP_SA"), spec.get("secret_key"))
            assert credential is not None
            key = ServiceAccountKey.parse(credential.value)
            credentials = await credentials_for(key, (BIGQUERY_SCOPE,), settings, refresh=False)
        project = source.get("project") or (key.project_id if key else None) or services.bigquery.project
        project = project_id(project, "source project")
        dataset = identifier(source.get("dataset"), "source dataset")
        table = source.get("table")
        if not isinstance(table, str) or not _SOURCE_TABLE.match(table):
            raise invalid(f"source table name {table!r} is not a valid BigQuery table name")
        source_ref = f"{project}.{dataset}.{table}"
        source_warehouse = Warehouse.on_project(services, project, credentials)

        if raw_query is not None and source.get("query_file"):
            raise invalid("give either source.query or source.query_file, not both")
        template = raw_query if raw_query is not None else (
            resolve_file(services, source.get("query_file"), "source.query_file").read_text(encoding="utf-8")
            if source.get("query_file") else None)
        if not template:
            raise invalid("source.query or source.query_file is required")
        margin = (None if source.get("partition_margin_days", 2) is None
                  else int_option(source, "partition_margin_days", 2, 0, 366))
        partition_filter = await _partition_filter(source_warehouse, source_ref, margin)
        sql = render_identifiers(without_line_comments(template), {
            "source_table": source_ref, "source_project": project, "source_dataset": dataset,
            "partition_filter": partition_filter})
        specs = [("start_date", "DATE", dates.start), ("end_date", "DATE", dates.end),
                 ("org_slug", "STRING", context.org_slug)]
        for spec in parameter_specs(source.get("parameters")):
            if spec[0] in _RESERVED:
                raise invalid(f"parameter @{spec[0]} is provided by the platform and cannot be redefined")
            specs.append(spec)

        # Destination side: the service's client, the org's dataset.
        destination = section(config, "destination")
        schema_file = destination.get("schema_file")
        sink = TableSink(
            services, context, step.step_id, table=str(destination.get("table") or ""),
            schema_file=resolve_file(services, schema_file, "destination.schema_file") if schema_file else None,
            mode=write_mode(destination.get("write_mode"), "append"), key_columns=destination.get("key_columns") or [],
            date_column=destination.get("date_column"), date_range=dates,
            partition_field=destination.get("partition_field"), cluster_fields=destination.get("cluster_fields") or (),
            source_url=f"bigquery://{source_ref}",
            batch_size=int_option(destination, "batch_size", settings.write_batch_size, 1, 50_000))
        page_size = int_option(source, "page_size", 5000, 1, 100_000) or 5000

        clock = time.perf_counter()
        removed = await sink.prepare()
        copy = _Copy(source_warehouse, sql, query_parameters(specs), page_size, sink)
        written = await asyncio.to_thread(copy.run)
        seconds = time.perf_counter() - clock
        result: dict[str, Any] = {
            "status": "SUCCESS", "rows_processed": written, "source_table": source_ref,
            "destination_table": sink.qualified, "write_mode": sink.mode, "source_pages": copy.pages,
            "bytes_processed": copy.bytes_processed, "days": dates.days, "dual_client": credentials is not None,
            "write_method": copy.method, "max_rows_per_page": copy.max_page,
            "rows_per_second": round(written / seconds, 1) if seconds > 0 else None, **dates.as_result(),
        }
        if key is not None:
            result["service_account"] = key.client_email
        if removed:
            result["rows_of_earlier_attempt_removed"] = removed
        return result


class _Copy:
    """Source query -> pages -> one Writer call, all in one worker thread.

    The Writer consumes the rows lazily in batches (memory: one source page plus one batch) and applies
    a replace mode with one MERGE at the end: a copy that fails half-way changes nothing, and a day
    copied again replaces that day's rows."""

    def __init__(self, source: Warehouse, sql: str, parameters: list[Any], page_size: int, sink: TableSink):
        self.source = source
        self.sql = sql
        self.parameters = parameters
        self.page_size = page_size
        self.sink = sink
        self.pages = 0
        self.max_page = 0
        self.bytes_processed = 0
        self.method = ""

    def rows(self, result: Any) -> Iterator[dict[str, Any]]:
        for page in result.pages:
            records = [dict(row.items()) for row in page]
            self.pages += 1
            self.max_page = max(self.max_page, len(records))
            yield from self.sink.shape(records)

    def run(self) -> int:
        job, result = self.source.paged_query_blocking(self.sql, self.parameters, self.page_size)
        self.bytes_processed = int(job.total_bytes_processed or 0)
        outcome = self.sink.writer.write(self.sink.dataset, self.sink.table, self.rows(result),
                               **self.sink.writer_options(self.sink.mode))
        self.method = str(getattr(outcome, "method", ""))
        return int(getattr(outcome, "rows_written", 0))


def get_engine() -> BigQueryEtl:
    return BigQueryEtl()
