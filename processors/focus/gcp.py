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

BillingAccountName: the export carries only the account id, so each distinct id of the run's rows is
looked up once per run with Cloud Billing `GET /v1/billingAccounts/{id}` (its `displayName`), with the
org's GCP service-account credential (GCP_SA, as the GCP pipelines resolve it; scope
cloud-billing.readonly; the account must grant the service account billing.accounts.get, e.g. Billing
Account Viewer). An account the API does not name (403, 404, network, no credential, or
`names_from_provider: false`) gets its configured `billing_account_names` name, else the id. A lookup
failure never fails the mapping: the step result says where the names came from
(`billing_account_names_from`, and `billing_account_lookup_failures` per account).

Config (all optional): start_date/end_date (usage_date), max_range_days, billing_account_id (used when
the row has none), names_from_provider (default true), credential {provider: GCP_SA, secret_key},
retry, rate_limit, billing_account_names {id: name} (accounts the API does not name; else the id),
sub_account_names {project id: name} (for rows without project.name; else the id), invoice_timezone
(default America/Los_Angeles), source {table, schema_file}, destination {table, schema_file}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from convergence.extractors.credentials import resolve_credential
from convergence.extractors.retry import http_limits
from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, StepError
from convergence.processors._llm.bq import Warehouse
from convergence.processors._llm.calc import TableSpec
from convergence.processors._llm.params import date_range, invalid
from convergence.processors.focus._base import Branch, FocusSource, named, names_config, numeric, sql_text
from convergence.processors.focus._spec import SUBCATEGORIES, default_subcategory
from convergence.processors.gcp._auth import GoogleServiceAccountAuth, ServiceAccountKey

log = structlog.get_logger(__name__)

# Cloud Billing API, "Method: billingAccounts.get": GET /v1/{name=billingAccounts/*} answers a BillingAccount
# ("REST Resource: billingAccounts": name, open, displayName, masterBillingAccount, parent, currencyCode);
# cloud-billing.readonly is one of its scopes.
BILLING_SCOPE = "https://www.googleapis.com/auth/cloud-billing.readonly"
# Export ids look like 012345-567890-ABCDEF; anything else (a row without one gets the org slug) is not
# looked up, and never reaches a URL path.
ACCOUNT_ID = re.compile(r"^[0-9A-Z]{6}-[0-9A-Z]{6}-[0-9A-Z]{6}$")
# Cloud Billing "Quotas and limits": each project can make 300 API calls per minute to the Cloud Billing API
# (the quota of the customer's service-account project), so 5 a second by default.
DEFAULT_REQUESTS_PER_SECOND = 5.0
# At most this many accounts looked up per run (a reseller export may carry many subaccounts); the rest
# keep their configured name or id.
MAX_ACCOUNT_LOOKUPS = 100
_ACCOUNT_IDS = """SELECT DISTINCT IFNULL(billing_account_id, @billing_account_id) AS account_id FROM {source}
WHERE org_slug = @org_slug AND usage_date BETWEEN @start_date AND @end_date"""

# Cloud Billing service.description -> (FOCUS ServiceCategory, ServiceSubcategory), from FOCUS 1.2's allowed
# values (processors/focus/_spec.py SUBCATEGORIES). Unmapped services: Other / Other (Other). The step
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

    async def prepare(self, config: Mapping[str, Any], context: RunContext) -> tuple[Mapping[str, Any], dict[str, Any]]:
        """billing_account_names with the Cloud Billing API's names over the configured ones."""
        use_api = config.get("names_from_provider", True)
        if not isinstance(use_api, bool):
            raise invalid("names_from_provider must be true or false")
        if not use_api:
            return config, {"billing_account_names_from": "configuration"}
        accounts = await self._account_ids(config, context)
        if not accounts:
            return config, {"billing_account_names_from": "configuration (no billing account id to look up)"}
        try:
            auth = await _billing_auth(config, context)
        except StepError as error:
            log.warning("billing account names not read from Cloud Billing; configuration used", code=error.code)
            return config, {"billing_account_names_from": f"configuration ({error.code})"}
        listed, failures = await _looked_up(auth, accounts, config, context)
        noted: dict[str, Any] = {"billing_account_names_from":
                                 f"Cloud Billing API ({len(listed)} of {len(accounts)} named)"}
        if failures:
            log.warning("billing account names not read for some accounts; configuration or id used",
                        accounts=len(failures))
            noted["billing_account_lookup_failures"] = "; ".join(f"{k}: {v}" for k, v in sorted(failures.items()))
        configured = names_config(config, "billing_account_names")
        return {**config, "billing_account_names": {**configured, **listed}}, noted

    async def _account_ids(self, config: Mapping[str, Any], context: RunContext) -> list[str]:
        """The distinct billing account ids of the org's rows in the run's dates (one query, no table made)."""
        dates = date_range(config, context.parameters)
        warehouse = Warehouse(context.services, context.org_slug)
        source = TableSpec(config.get("source"), *self.inputs["source"])
        if not await warehouse.table_exists(source.table):
            return []
        rows, _ = await warehouse.query(_ACCOUNT_IDS.format(source=warehouse.ref(source.table)), {
            "org_slug": context.org_slug, "start_date": dates.start, "end_date": dates.end,
            "billing_account_id": self.extra_params(config, context)["billing_account_id"]})
        return sorted(str(r["account_id"]) for r in rows if r["account_id"] and ACCOUNT_ID.match(str(r["account_id"])))

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


async def _billing_auth(config: Mapping[str, Any], context: RunContext) -> GoogleServiceAccountAuth:
    """The org's service account (the step's `credential`, default provider GCP_SA) with a token now."""
    spec = config.get("credential") or {}
    if not isinstance(spec, Mapping):
        raise invalid("credential must be a mapping {provider, secret_key}")
    credential = await resolve_credential(context, str(spec.get("provider") or "GCP_SA"), spec.get("secret_key"))
    if credential is None:  # unreachable with a default provider; kept for the type checker
        raise invalid("credential.provider or credential.secret_key is required")
    auth = GoogleServiceAccountAuth(ServiceAccountKey.parse(credential.value), (BILLING_SCOPE,),
                                    context.services.settings)
    await auth.prepare()
    return auth


async def _looked_up(auth: GoogleServiceAccountAuth, accounts: list[str], config: Mapping[str, Any],
                     context: RunContext) -> tuple[dict[str, str], dict[str, str]]:
    """({id: displayName}, {id: why not}): one billingAccounts.get per account. A 403/404 concerns that
    account only; a refused token or an unreachable API ends the lookups (the rest would fail alike)."""
    settings = context.services.settings
    limits = http_limits(config, code=ErrorCode.CONFIG_INVALID)
    rate = limits.rate_per_second or DEFAULT_REQUESTS_PER_SECOND
    http = context.services.http("gcp:cloudbilling", rate_per_second=rate, policy=limits.policy)
    base = settings.gcp_api_url_template.replace("{service}", "cloudbilling").rstrip("/")
    names: dict[str, str] = {}
    failures: dict[str, str] = {}
    stopped: str | None = None
    for index, account in enumerate(accounts):
        if stopped or index >= MAX_ACCOUNT_LOOKUPS:
            failures[account] = f"not looked up ({stopped or f'more than {MAX_ACCOUNT_LOOKUPS} accounts'})"
            continue
        try:
            await auth.prepare()  # a token about to expire is refreshed
            context.secrets["gcp_cloudbilling_token"] = auth.credentials.token  # masked in results and events
            body, _ = await http.request_json("GET", f"{base}/v1/billingAccounts/{account}", headers={
                "Authorization": f"Bearer {auth.credentials.token}", "Accept": "application/json"})
        except StepError as error:
            status = error.details.get("status")
            failures[account] = f"HTTP {status} ({error.code})" if status else str(error.code)
            if error.retryable or status in (None, 401):
                stopped = failures[account]
            continue
        name = body.get("displayName") if isinstance(body, dict) else None
        if not isinstance(body, dict) or body.get("name") != f"billingAccounts/{account}":
            failures[account] = f"{ErrorCode.PROVIDER_BAD_RESPONSE} (not this account's resource)"
        elif not isinstance(name, str) or not name.strip():
            failures[account] = "no displayName"
        else:
            names[account] = name.strip()[:200]
    return names, failures


def get_engine() -> GcpFocus:
    return GcpFocus()
