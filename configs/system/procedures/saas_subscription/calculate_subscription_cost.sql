CREATE OR REPLACE PROCEDURE `{project}.{dataset}.calculate_subscription_cost`(
  p_project_id STRING,
  p_dataset_id STRING,
  p_org_slug STRING,
  p_start_date DATE,
  p_end_date DATE
)
BEGIN
  -- Daily amortised cost of every SaaS subscription of one org, for a date range (spec 000, "Stored
  -- Procedures"; pipeline configs/saas_subscription/costs/saas_cost.yml).
  --
  -- Reads  `<p_project_id>.<p_dataset_id>.saas_subscriptions`          (one row per subscription)
  -- Writes `<p_project_id>.<p_dataset_id>.saas_subscription_cost_daily` (one row per subscription and day)
  --
  -- Amortisation: a billing cycle's amount (unit_price x quantity) is spread evenly over the months of
  -- the cycle (monthly 1, quarterly 3, annual 12) and each month's share evenly over that month's days.
  -- A whole month therefore sums to exactly price x seats / months-per-cycle, and a subscription that
  -- starts or ends mid-month pays for the days it was active (pro rata by day).
  --
  -- Idempotent per range: one MERGE replaces the org's rows of [p_start_date, p_end_date].
  -- Names reach the dynamic SQL only after the checks below (the executor validates them too).

  SELECT IF(p_start_date IS NULL OR p_end_date IS NULL OR p_start_date > p_end_date,
            ERROR('calculate_subscription_cost: p_start_date must be on or before p_end_date'), TRUE) AS dates_ok;
  SELECT IF(NOT REGEXP_CONTAINS(p_project_id, r'^[a-z][a-z0-9-]+[a-z0-9]$')
            OR NOT REGEXP_CONTAINS(p_dataset_id, r'^[A-Za-z0-9_]+$')
            OR NOT REGEXP_CONTAINS(p_org_slug, r'^[a-z0-9_]+$'),
            ERROR('calculate_subscription_cost: invalid project, dataset or org slug'), TRUE) AS names_ok;

  -- One MERGE deletes the org's rows of the range and inserts the new ones: atomic, and a re-run of the
  -- same range leaves exactly one row per subscription and day.
  EXECUTE IMMEDIATE FORMAT("""
    MERGE `%s.%s.saas_subscription_cost_daily` AS T
    USING (
      SELECT
        s.org_slug, d AS cost_date, s.subscription_id, s.provider, s.plan_name,
        LOWER(s.billing_cycle) AS billing_cycle, s.quantity, s.unit_price, s.currency,
        s.unit_price * s.quantity / (CASE LOWER(s.billing_cycle) WHEN 'annual' THEN 12 WHEN 'yearly' THEN 12
                                                                WHEN 'quarterly' THEN 3 ELSE 1 END) AS monthly_cost,
        s.unit_price * s.quantity / (CASE LOWER(s.billing_cycle) WHEN 'annual' THEN 12 WHEN 'yearly' THEN 12
                                                                WHEN 'quarterly' THEN 3 ELSE 1 END)
          / EXTRACT(DAY FROM LAST_DAY(d)) AS daily_cost,
        CURRENT_TIMESTAMP() AS calculated_at
      FROM `%s.%s.saas_subscriptions` AS s
      CROSS JOIN UNNEST(GENERATE_DATE_ARRAY(GREATEST(s.start_date, DATE '%s'),
                                            LEAST(IFNULL(s.end_date, DATE '%s'), DATE '%s'))) AS d
      WHERE s.org_slug = '%s'
        AND s.start_date <= DATE '%s'
        AND (s.end_date IS NULL OR s.end_date >= DATE '%s')
        AND IFNULL(LOWER(s.status), 'active') != 'deleted'
    ) AS S
    ON FALSE
    WHEN NOT MATCHED BY SOURCE AND T.org_slug = '%s' AND T.cost_date BETWEEN DATE '%s' AND DATE '%s' THEN DELETE
    WHEN NOT MATCHED THEN INSERT
      (org_slug, cost_date, subscription_id, provider, plan_name, billing_cycle, quantity, unit_price, currency,
       monthly_cost, daily_cost, calculated_at)
    VALUES
      (S.org_slug, S.cost_date, S.subscription_id, S.provider, S.plan_name, S.billing_cycle, S.quantity,
       S.unit_price, S.currency, S.monthly_cost, S.daily_cost, S.calculated_at)
  """,
    p_project_id, p_dataset_id, p_project_id, p_dataset_id,
    CAST(p_start_date AS STRING), CAST(p_end_date AS STRING), CAST(p_end_date AS STRING),
    p_org_slug, CAST(p_end_date AS STRING), CAST(p_start_date AS STRING),
    p_org_slug, CAST(p_start_date AS STRING), CAST(p_end_date AS STRING));

  EXECUTE IMMEDIATE FORMAT(
    "SELECT COUNT(*) AS rows_written, SUM(daily_cost) AS total_cost FROM `%s.%s.saas_subscription_cost_daily` WHERE org_slug = '%s' AND cost_date BETWEEN DATE '%s' AND DATE '%s'",
    p_project_id, p_dataset_id, p_org_slug, CAST(p_start_date AS STRING), CAST(p_end_date AS STRING));
END;
