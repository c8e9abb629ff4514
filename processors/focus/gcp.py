"""ps_type `focus.gcp`: the copied Cloud Billing export (`gcp_billing_daily_raw`) as FOCUS rows.

- One row per export row: ChargeCategory from cost_type (regular -> Usage, tax -> Tax, adjustment and
  rounding error -> Adjustment); BilledCost = EffectiveCost = ContractedCost = cost (before credits),
  ListCost = cost_at_list (cost when absent).
- Credits are their own rows (ChargeCategory Credit, one per export row with credits): BilledCost =
  EffectiveCost = SUM(credits.amount) (negative), ListCost = ContractedCost = 0. So SUM(BilledCost) is
  the export's net cost (cost + credits).
- BillingPeriod is the invoice month, in Pacific time as Google invoices it (so a charge at 03:00 UTC on
  the 1st that belongs to the previous invoice month stays within its billing period).
- ChargePeriod = usage_start_time/usage_end_time; service, SKU, project (sub-account), region/zone,
  usage amounts (consumed: usage.amount/unit; pricing: amount_in_pricing_units/pricing_unit) and labels
  (Tags: {"key": "value"} JSON text).

Config (all optional): start_date/end_date (usage_date), max_range_days, billing_account_id (used when
the row has none), invoice_timezone (default America/Los_Angeles), source {table, schema_file},
destination {table, schema_file}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.context import RunContext
from processors._llm.params import invalid
from processors.focus._base import Branch, FocusSource, numeric, sql_text

_CATEGORY = """CASE
    WHEN service_description IN ('Compute Engine', 'Kubernetes Engine', 'Cloud Run', 'Cloud Run Functions',
      'Cloud Functions', 'App Engine', 'Batch') THEN 'Compute'
    WHEN service_description IN ('Cloud Storage', 'Filestore', 'Backup and DR Service') THEN 'Storage'
    WHEN service_description IN ('Cloud SQL', 'Cloud Spanner', 'Cloud Bigtable', 'Firestore', 'Cloud Firestore',
      'Cloud Memorystore for Redis', 'AlloyDB') THEN 'Databases'
    WHEN service_description IN ('BigQuery', 'BigQuery Reservation API', 'BigQuery Storage API', 'Dataflow',
      'Dataproc', 'Looker Studio', 'Cloud Composer') THEN 'Analytics'
    WHEN service_description IN ('Vertex AI', 'Gemini API', 'Generative Language API', 'Cloud Vision API',
      'Cloud Natural Language API', 'Cloud Translation API', 'Cloud Speech API', 'Document AI') THEN
      'AI and Machine Learning'
    WHEN service_description IN ('Networking', 'Cloud DNS', 'Cloud CDN', 'Cloud Load Balancing', 'Cloud NAT',
      'Network Intelligence Center', 'Cloud VPN', 'Cloud Interconnect') THEN 'Networking'
    WHEN service_description IN ('Cloud Logging', 'Cloud Monitoring', 'Cloud Trace', 'Stackdriver Logging',
      'Stackdriver Monitoring') THEN 'Management and Governance'
    WHEN service_description IN ('Cloud Build', 'Artifact Registry', 'Container Registry', 'Cloud Source Repositories')
      THEN 'Developer Tools'
    WHEN service_description IN ('Secret Manager', 'Cloud Key Management Service (KMS)', 'Security Command Center',
      'Cloud Armor') THEN 'Security'
    WHEN service_description IN ('Cloud Pub/Sub', 'Pub/Sub', 'Cloud Scheduler', 'Cloud Tasks', 'Workflows',
      'Eventarc') THEN 'Integration'
    ELSE 'Other' END"""
_CHARGE_CATEGORY = """CASE LOWER(IFNULL(cost_type, 'regular'))
    WHEN 'tax' THEN 'Tax' WHEN 'adjustment' THEN 'Adjustment' WHEN 'rounding error' THEN 'Adjustment'
    ELSE 'Usage' END"""
_TAGS = """(SELECT CONCAT('{', STRING_AGG(CONCAT(TO_JSON_STRING(JSON_VALUE(l, '$.key')), ':',
    TO_JSON_STRING(JSON_VALUE(l, '$.value'))), ','), '}') FROM UNNEST(JSON_QUERY_ARRAY(labels)) AS l)"""
_COLUMNS = ("usage_date", "billing_account_id", "service_id", "service_description", "sku_id", "sku_description",
            "usage_start_time", "usage_end_time", "project_id", "project_name", "labels", "location", "region", "zone",
            "cost", "currency", "cost_at_list", "credits_total", "usage_amount", "usage_unit",
            "usage_amount_in_pricing_units", "usage_pricing_unit", "invoice_month", "cost_type")


_ZONE = re.compile(r"^[A-Za-z_]+(/[A-Za-z0-9_+\-]+)*$")


def timezone_literal(name: Any) -> str:
    """A time zone as a SQL literal (the emulator takes no parameter there): a known IANA name only."""
    text = str(name)
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid(f"invoice_timezone {text!r} is not a known time zone") from None
    if not _ZONE.match(text):
        raise invalid(f"invoice_timezone {text!r} is not a time zone name")
    return f"'{text}'"


class GcpFocus(FocusSource):
    source = "gcp"
    inputs = {"source": ("gcp_billing_daily_raw", "configs/gcp/cost/schemas/billing_cost.json")}

    def extra_params(self, config: Mapping[str, Any], context: RunContext) -> dict[str, Any]:
        return {"billing_account_id": str(config.get("billing_account_id") or context.org_slug)}

    def ctes(self, refs: Mapping[str, str], config: Mapping[str, Any], context: RunContext) -> str:
        return f"""WITH gcp AS (
  SELECT {", ".join(_COLUMNS)},
    {_CHARGE_CATEGORY} AS charge_category,
    PARSE_DATE('%Y%m', IFNULL(invoice_month, FORMAT_DATE('%Y%m', usage_date))) AS invoice_start
  FROM {refs['source']}
  WHERE org_slug = @org_slug AND usage_date BETWEEN @start_date AND @end_date
)"""  # noqa: S608 - validated names

    def branches(self, refs: Mapping[str, str], config: Mapping[str, Any], context: RunContext) -> list[Branch]:
        table = refs["source"].split(".")[-1].strip("`")
        provider = sql_text("Google Cloud")
        zone = timezone_literal(config.get("invoice_timezone") or "America/Los_Angeles")
        common = {
            "BillingAccountId": "IFNULL(billing_account_id, @billing_account_id)",
            "BillingAccountType": "'Billing Account'",
            "BillingCurrency": "UPPER(IFNULL(currency, 'USD'))",
            "BillingPeriodStart": f"TIMESTAMP(invoice_start, {zone})",
            "BillingPeriodEnd": f"TIMESTAMP_ADD(TIMESTAMP(LAST_DAY(invoice_start), {zone}), INTERVAL 1 DAY)",
            "ChargePeriodStart": "IFNULL(usage_start_time, TIMESTAMP(usage_date))",
            "ChargePeriodEnd": "IFNULL(usage_end_time, TIMESTAMP_ADD(TIMESTAMP(usage_date), INTERVAL 1 DAY))",
            "ChargeFrequency": "'Usage-Based'",
            "InvoiceIssuerName": provider, "ProviderName": provider, "PublisherName": provider,
            "ServiceProviderName": provider, "HostProviderName": provider,
            "ServiceName": "IFNULL(service_description, 'Google Cloud')", "ServiceCategory": _CATEGORY,
            "SkuId": "sku_id", "SkuMeter": "sku_description",
            "SubAccountId": "project_id", "SubAccountName": "project_name",
            "SubAccountType": "CASE WHEN project_id IS NOT NULL THEN 'Project' END",
            "RegionId": "IFNULL(region, location)", "RegionName": "IFNULL(region, location)",
            "AvailabilityZone": "zone", "Tags": _TAGS,
            "x_ChargeDate": "usage_date", "x_CostBasis": "'billed'", "x_SourceTable": sql_text(table),
        }
        charges = {
            **common,
            "ChargeCategory": "charge_category",
            "ChargeDescription": "sku_description",
            "BilledCost": numeric("IFNULL(cost, 0)"), "EffectiveCost": numeric("IFNULL(cost, 0)"),
            "ContractedCost": numeric("IFNULL(cost, 0)"), "ListCost": numeric("IFNULL(cost_at_list, IFNULL(cost, 0))"),
            "PricingCategory": "CASE WHEN charge_category = 'Usage' THEN 'Standard' END",
            "ConsumedQuantity": f"CASE WHEN charge_category = 'Usage' AND usage_unit IS NOT NULL "
                                f"THEN {numeric('usage_amount')} END",
            "ConsumedUnit": "CASE WHEN charge_category = 'Usage' AND usage_amount IS NOT NULL THEN usage_unit END",
            "PricingQuantity": f"CASE WHEN usage_pricing_unit IS NOT NULL "
                               f"THEN {numeric('usage_amount_in_pricing_units')} END",
            "PricingUnit": "usage_pricing_unit",
        }
        credits = {
            **common,
            "ChargeCategory": "'Credit'",
            "ChargeDescription": "CONCAT('Credits: ', IFNULL(sku_description, IFNULL(service_description, '')))",
            "BilledCost": numeric("credits_total"), "EffectiveCost": numeric("credits_total"),
            "ContractedCost": numeric("0"), "ListCost": numeric("0"),
        }
        return [Branch(charges, "FROM gcp"),
                Branch(credits, "FROM gcp WHERE credits_total IS NOT NULL AND credits_total <> 0")]


def get_engine() -> GcpFocus:
    return GcpFocus()
