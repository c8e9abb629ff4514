"""Days an org's pipeline has no successful run for, from the run log (org_meta_pipeline_runs).

The days a run covers come from the parameters the run log recorded for it, read the way the LLM
pipelines read them (processors/_llm/params.date_range): `start_date`/`end_date` (ISO or a named date:
today, yesterday, month_start, month_end, taken on the day the run started, UTC), else `date`, else
yesterday; a start without an end runs until yesterday; `lookback_days` N widens the range to at
least the N days ending end_date. So the scheduled run of day D with a 3-day lookback covers D-2..D.
A pipeline whose lookback is a pipeline variable rather than a run parameter is credited with the
recorded days only: it may show more gaps than it has, never fewer.

ONE query per call; org, pipeline and days are query parameters.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from convergence.pipeline.results import RunStatus
from convergence.warehouse.identifiers import validate_dataset, validate_org_slug
from convergence.warehouse.query import QueryRunner
from convergence.warehouse.runlog import RUNS_TABLE


def _day(raw: str) -> str:
    """A recorded date parameter as a DATE (NULL when absent or unreadable)."""
    return (f"CASE {raw} WHEN 'today' THEN `run_day` WHEN 'yesterday' THEN DATE_SUB(`run_day`, INTERVAL 1 DAY) "
            f"WHEN 'month_start' THEN DATE_TRUNC(`run_day`, MONTH) WHEN 'month_end' THEN LAST_DAY(`run_day`, MONTH) "
            f"ELSE SAFE.PARSE_DATE('%Y-%m-%d', {raw}) END")


def gaps_sql(runs_table: str) -> str:
    # The table name is validated; every value is a query parameter.
    return f"""
WITH `succeeded` AS (
  SELECT DATE(COALESCE(`start_time`, `event_time`)) AS `run_day`,
    TRIM(JSON_VALUE(`parameters`, '$.start_date')) AS `raw_start`,
    TRIM(JSON_VALUE(`parameters`, '$.end_date')) AS `raw_end`,
    TRIM(JSON_VALUE(`parameters`, '$.date')) AS `raw_date`,
    LEAST(GREATEST(COALESCE(SAFE_CAST(JSON_VALUE(`parameters`, '$.lookback_days') AS INT64), 1), 1), 366)
      AS `lookback`
  FROM `{runs_table}`
  WHERE `org_slug` = @org_slug AND `pipeline` = @pipeline AND `status` = @success
    AND `event_time` >= @recorded_since
), `dated` AS (
  SELECT `run_day`, `lookback`, {_day("`raw_start`")} AS `given_start`, {_day("`raw_end`")} AS `given_end`,
    {_day("`raw_date`")} AS `given_date`
  FROM `succeeded`
), `ends` AS (
  SELECT `lookback`,
    CASE WHEN `given_start` IS NOT NULL OR `given_end` IS NOT NULL THEN COALESCE(`given_start`, `given_end`)
         WHEN `given_date` IS NOT NULL THEN `given_date`
         ELSE DATE_SUB(`run_day`, INTERVAL 1 DAY) END AS `first_day`,
    CASE WHEN `given_end` IS NOT NULL THEN `given_end`
         WHEN `given_start` IS NOT NULL THEN IF(`given_start` <= `run_day`,
           GREATEST(`given_start`, DATE_SUB(`run_day`, INTERVAL 1 DAY)), `given_start`)
         WHEN `given_date` IS NOT NULL THEN `given_date`
         ELSE DATE_SUB(`run_day`, INTERVAL 1 DAY) END AS `last_day`
  FROM `dated`
), `covered` AS (
  SELECT `day`
  FROM `ends`,
    UNNEST(GENERATE_DATE_ARRAY(LEAST(`first_day`, DATE_SUB(`last_day`, INTERVAL (`lookback` - 1) DAY)),
                               `last_day`)) AS `day`
  WHERE `last_day` >= @first_day
)
SELECT `day` FROM UNNEST(GENERATE_DATE_ARRAY(@first_day, @last_day)) AS `day`
WHERE `day` NOT IN (SELECT `day` FROM `covered` WHERE `day` IS NOT NULL)
ORDER BY `day`
"""  # noqa: S608


def missing_days(client: Any, settings: Any, org_slug: str, pipeline: str, first_day: date, last_day: date,
                 queries: QueryRunner | None = None) -> list[date]:
    """The days in first_day..last_day (inclusive) with no successful run of `pipeline` for the org.

    Runs end on or before the day they run (future end dates are refused), so a run recorded before
    first_day cannot cover the window: that bound keeps the scan to the window's partitions."""
    if last_day < first_day:
        raise ValueError(f"{last_day} is before {first_day}")
    runs_table = f"{client.project}.{validate_dataset(settings.central_dataset)}.{RUNS_TABLE}"
    recorded_since = datetime.combine(first_day, time.min, UTC)
    runner = queries or QueryRunner(client, settings)
    rows = runner.rows(gaps_sql(runs_table), {
        "org_slug": validate_org_slug(org_slug), "pipeline": str(pipeline), "success": RunStatus.SUCCESS.value,
        "first_day": first_day, "last_day": last_day, "recorded_since": recorded_since})
    return [row["day"] for row in rows]
