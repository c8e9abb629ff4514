-- SaaS subscription costs per provider and month, from the daily amortised costs.
-- Identifiers: {project_id}, {org_dataset}. Parameters: @org_slug, @start_date, @end_date.
SELECT
  org_slug,
  DATE_TRUNC(cost_date, MONTH) AS cost_month,
  provider,
  currency,
  COUNT(DISTINCT subscription_id) AS subscriptions,
  SUM(daily_cost) AS total_cost,
  CURRENT_TIMESTAMP() AS calculated_at
FROM `{project_id}.{org_dataset}.saas_subscription_cost_daily`
WHERE org_slug = @org_slug AND cost_date BETWEEN @start_date AND @end_date
GROUP BY org_slug, cost_month, provider, currency
