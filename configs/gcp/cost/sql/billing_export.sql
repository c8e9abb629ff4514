-- One range of days of a customer's standard usage cost export (gcp_billing_export_v1_<ACCOUNT>),
-- flattened to configs/gcp/cost/schemas/billing_cost.json. Run by gcp.bq_etl with the customer's
-- service account, on the customer's project.
--   {source_table}     validated `project.dataset.table` (a trailing * selects a wildcard table)
--   {partition_filter} prunes the export's ingestion-time partitions older than the range (minus a
--                      margin), or TRUE when the table is not ingestion-time partitioned
--   @start_date, @end_date  the usage dates to copy (inclusive, UTC)
SELECT
  DATE(usage_start_time) AS usage_date,
  billing_account_id,
  service.id AS service_id,
  service.description AS service_description,
  sku.id AS sku_id,
  sku.description AS sku_description,
  usage_start_time,
  usage_end_time,
  project.id AS project_id,
  project.number AS project_number,
  project.name AS project_name,
  TO_JSON_STRING(project.labels) AS project_labels,
  TO_JSON_STRING(labels) AS labels,
  TO_JSON_STRING(system_labels) AS system_labels,
  location.location AS location,
  location.country AS country,
  location.region AS region,
  location.zone AS zone,
  cost,
  currency,
  currency_conversion_rate,
  cost_at_list,
  IFNULL((SELECT SUM(c.amount) FROM UNNEST(credits) AS c), 0) AS credits_total,
  cost + IFNULL((SELECT SUM(c.amount) FROM UNNEST(credits) AS c), 0) AS net_cost,
  TO_JSON_STRING(credits) AS credits,
  usage.amount AS usage_amount,
  usage.unit AS usage_unit,
  usage.amount_in_pricing_units AS usage_amount_in_pricing_units,
  usage.pricing_unit AS usage_pricing_unit,
  invoice.month AS invoice_month,
  cost_type,
  export_time
FROM `{source_table}`
WHERE DATE(usage_start_time) BETWEEN @start_date AND @end_date
  AND {partition_filter}
