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
the row has none), billing_account_names {id: name} (else the id: the export has no account name),
sub_account_names {project id: name} (for rows without project.name; else the id), invoice_timezone
(default America/Los_Angeles), source {table, schema_file}, destination {table, schema_file}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from convergence.pipeline.context import RunContext
from convergence.processors._llm.params import invalid
from convergence.processors.focus._base import Branch, FocusSource, named, names_config, numeric, sql_text
from convergence.processors.focus.conformance import SUBCATEGORIES, default_subcategory

# Cloud Billing service.description -> (FOCUS ServiceCategory, ServiceSubcategory), from FOCUS 1.2's allowed
# values (processors/focus/conformance.py SUBCATEGORIES). Unmapped services: Other / Other (Other). The step
# config `services` adds or overrides entries.
GCP_SERVICES: dict[str, tuple[str, str]] = {
    "Compute Engine": ("Compute", "Virtual Machines"),
    "Kubernetes Engine": ("Compute", "Containers"),
    "Cloud Run": ("Compute", "Serverless Compute"),
    "Cloud Run Functions": ("Compute", "Serverless Compute"),
    "Cloud Functions": ("Compute", "Serverless Compute"),
    "App Engine": ("Compute", "Serverless Compute"),
    "Batch": ("Compute", "Other (Compute)"),
    "Cloud Storage": ("Storage", "Object Storage"),
    "Filestore": ("Storage", "File Storage"),
    "Backup and DR Service": ("Storage", "Backup Storage"),
    "Cloud SQL": ("Databases", "Relational Databases"),
    "Cloud Spanner": ("Databases", "Relational Databases"),
    "AlloyDB": ("Databases", "Relational Databases"),
    "Cloud Bigtable": ("Databases", "NoSQL Databases"),
    "Firestore": ("Databases", "NoSQL Databases"),
    "Cloud Firestore": ("Databases", "NoSQL Databases"),
    "Cloud Memorystore for Redis": ("Databases", "Caching"),
    "BigQuery": ("Analytics", "Analytics Platforms"),
    "BigQuery Reservation API": ("Analytics", "Analytics Platforms"),
    "BigQuery Storage API": ("Analytics", "Analytics Platforms"),
    "Dataflow": ("Analytics", "Data Processing"),
    "Dataproc": ("Analytics", "Data Processing"),
    "Looker Studio": ("Analytics", "Business Intelligence"),
    "Cloud Composer": ("Integration", "Workflow Orchestration"),
    "Vertex AI": ("AI and Machine Learning", "AI Platforms"),
    "Gemini API": ("AI and Machine Learning", "Generative AI"),
    "Generative Language API": ("AI and Machine Learning", "Generative AI"),
    "Cloud Vision API": ("AI and Machine Learning", "Machine Learning"),
    "Document AI": ("AI and Machine Learning", "Machine Learning"),
    "Cloud Natural Language API": ("AI and Machine Learning", "Natural Language Processing"),
    "Cloud Translation API": ("AI and Machine Learning", "Natural Language Processing"),
    "Cloud Speech API": ("AI and Machine Learning", "Natural Language Processing"),
    "Networking": ("Networking", "Network Connectivity"),
    "Cloud NAT": ("Networking", "Network Connectivity"),
    "Cloud VPN": ("Networking", "Network Connectivity"),
    "Cloud Interconnect": ("Networking", "Network Connectivity"),
    "Cloud DNS": ("Networking", "Network Routing"),
    "Cloud CDN": ("Networking", "Content Delivery"),
    "Cloud Load Balancing": ("Networking", "Application Networking"),
    "Network Intelligence Center": ("Networking", "Other (Networking)"),
    "Cloud Logging": ("Management and Governance", "Observability"),
    "Cloud Monitoring": ("Management and Governance", "Observability"),
    "Cloud Trace": ("Management and Governance", "Observability"),
    "Stackdriver Logging": ("Management and Governance", "Observability"),
    "Stackdriver Monitoring": ("Management and Governance", "Observability"),
    "Support": ("Management and Governance", "Support"),
    "Cloud Build": ("Developer Tools", "Continuous Integration and Deployment"),
    "Artifact Registry": ("Developer Tools", "Continuous Integration and Deployment"),
    "Container Registry": ("Developer Tools", "Continuous Integration and Deployment"),
    "Cloud Source Repositories": ("Developer Tools", "Source Code Management"),
    "Secret Manager": ("Security", "Secret Management"),
    "Cloud Key Management Service (KMS)": ("Security", "Secret Management"),
    "Security Command Center": ("Security", "Security Posture Management"),
    "Cloud Armor": ("Security", "Threat Detection and Response"),
    "Identity and Access Management": ("Identity", "Identity and Access Management"),
    "Identity Platform": ("Identity", "Identity and Access Management"),
    "Cloud Pub/Sub": ("Integration", "Messaging"),
    "Pub/Sub": ("Integration", "Messaging"),
    "Eventarc": ("Integration", "Messaging"),
    "Cloud Scheduler": ("Integration", "Workflow Orchestration"),
    "Cloud Tasks": ("Integration", "Workflow Orchestration"),
    "Workflows": ("Integration", "Workflow Orchestration"),
}
_UNMAPPED = ("Other", "Other (Other)")


def _literal(text: str) -> str:
    """A fixed label or a config value as a SQL string literal; quotes and backslashes are refused."""
    if "'" in text or "\\" in text or "\n" in text or len(text) > 200:
        raise invalid(f"service name {text!r} may not contain quotes, backslashes or newlines")
    return f"'{text}'"


def service_table(config: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """GCP_SERVICES with the step config's `services` {description: {category, subcategory}} over it."""
    table = dict(GCP_SERVICES)
    extra = config.get("services") or {}
    if not isinstance(extra, Mapping):
        raise invalid("services must be a mapping {service description: {category, subcategory}}")
    for name, value in extra.items():
        if not isinstance(value, Mapping) or value.get("category") not in SUBCATEGORIES:
            raise invalid(f"services.{name}.category must be a FOCUS ServiceCategory")
        category = str(value["category"])
        subcategory = str(value.get("subcategory") or default_subcategory(category))
        if subcategory not in SUBCATEGORIES[category]:
            raise invalid(f"services.{name}.subcategory {subcategory!r} is not a FOCUS subcategory of {category}")
        table[str(name)] = (category, subcategory)
    return table


def category_case(services: Mapping[str, tuple[str, str]], index: int) -> str:
    """CASE on service_description giving the category (index 0) or subcategory (index 1)."""
    whens = " ".join(f"WHEN {_literal(name)} THEN {_literal(pair[index])}" for name, pair in services.items())
    return f"CASE service_description {whens} ELSE {_literal(_UNMAPPED[index])} END"


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

    def _names(self, config: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """BillingAccountName and SubAccountName expressions and their parameters."""
        account, account_params = named("IFNULL(billing_account_id, @billing_account_id)",
                                        names_config(config, "billing_account_names"), "billing_account")
        project, project_params = named("project_id", names_config(config, "sub_account_names"), "sub_account")
        # The export's project.name first; a project without one gets its configured name, else its id.
        return account, f"IFNULL(project_name, {project})", {**account_params, **project_params}

    def extra_params(self, config: Mapping[str, Any], context: RunContext) -> dict[str, Any]:
        return {"billing_account_id": str(config.get("billing_account_id") or context.org_slug),
                **self._names(config)[2]}

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
        services = service_table(config)
        account_name, project_name, _ = self._names(config)
        common = {
            "BillingAccountId": "IFNULL(billing_account_id, @billing_account_id)",
            "BillingAccountName": account_name,
            "BillingAccountType": "'Billing Account'",
            "BillingCurrency": "UPPER(IFNULL(currency, 'USD'))",
            # The export prices in the billing currency: no conversion, so the pricing-currency figures are
            # the billing ones.
            "PricingCurrency": "UPPER(IFNULL(currency, 'USD'))",
            "BillingPeriodStart": f"TIMESTAMP(invoice_start, {zone})",
            "BillingPeriodEnd": f"TIMESTAMP_ADD(TIMESTAMP(LAST_DAY(invoice_start), {zone}), INTERVAL 1 DAY)",
            "ChargePeriodStart": "IFNULL(usage_start_time, TIMESTAMP(usage_date))",
            "ChargePeriodEnd": "IFNULL(usage_end_time, TIMESTAMP_ADD(TIMESTAMP(usage_date), INTERVAL 1 DAY))",
            "ChargeFrequency": "'Usage-Based'",
            "InvoiceIssuerName": provider, "ProviderName": provider, "PublisherName": provider,
            "ServiceProviderName": provider, "HostProviderName": provider,
            "ServiceName": "IFNULL(service_description, 'Google Cloud')",
            "ServiceCategory": category_case(services, 0), "ServiceSubcategory": category_case(services, 1),
            # FOCUS: SkuId (and so SkuMeter) is null on Tax rows.
            "SkuId": "CASE WHEN charge_category <> 'Tax' THEN sku_id END",
            "SkuMeter": "CASE WHEN charge_category <> 'Tax' AND sku_id IS NOT NULL THEN sku_description END",
            "SubAccountId": "project_id", "SubAccountName": project_name,
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
            "PricingCurrencyEffectiveCost": numeric("IFNULL(cost, 0)"),
            "ContractedCost": numeric("IFNULL(cost, 0)"), "ListCost": numeric("IFNULL(cost_at_list, IFNULL(cost, 0))"),
            "PricingCategory": "CASE WHEN charge_category = 'Usage' THEN 'Standard' END",
            "ConsumedQuantity": f"CASE WHEN charge_category = 'Usage' AND usage_unit IS NOT NULL "
                                f"THEN {numeric('usage_amount')} END",
            "ConsumedUnit": "CASE WHEN charge_category = 'Usage' AND usage_amount IS NOT NULL THEN usage_unit END",
            "PricingQuantity": f"CASE WHEN charge_category <> 'Tax' AND usage_pricing_unit IS NOT NULL "
                               f"THEN {numeric('usage_amount_in_pricing_units')} END",
            "PricingUnit": "CASE WHEN charge_category <> 'Tax' THEN usage_pricing_unit END",
        }
        credits = {
            **common,
            "ChargeCategory": "'Credit'",
            "ChargeDescription": "CONCAT('Credits: ', IFNULL(sku_description, IFNULL(service_description, '')))",
            "BilledCost": numeric("credits_total"), "EffectiveCost": numeric("credits_total"),
            "PricingCurrencyEffectiveCost": numeric("credits_total"),
            "ContractedCost": numeric("0"), "ListCost": numeric("0"),
        }
        return [Branch(charges, "FROM gcp"),
                Branch(credits, "FROM gcp WHERE credits_total IS NOT NULL AND credits_total <> 0")]


def get_engine() -> GcpFocus:
    return GcpFocus()
