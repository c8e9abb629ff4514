"""ps_type `focus.saas`: SaaS subscriptions as FOCUS rows, per the FOCUS SaaS agreement examples
(specification/appendix/saas_examples): what is paid up front is a Purchase, its cost is spread over the
days it covers as Usage.

- Purchase rows, one per billing cycle that starts within the run's dates (from `saas_subscriptions`):
  the cycle starts on the subscription's start_date and every 1 (monthly), 3 (quarterly) or 12 (annual)
  months after it (a 31st renews on the last day of shorter months), while the subscription runs (up to
  end_date; deleted subscriptions never). BilledCost = ListCost = ContractedCost = unit_price x quantity
  (what the vendor invoices), EffectiveCost = 0 (the cost is realised by the Usage rows below);
  ChargeFrequency Recurring (One-Time when the whole subscription is that single cycle); ChargePeriod =
  the cycle (a Purchase may cover more than its BillingPeriod); BillingPeriod = the cycle's first month;
  PricingQuantity = seats at ListUnitPrice = ContractedUnitPrice = unit_price.
- Usage rows, one per subscription and day (from `saas_subscription_cost_daily`, written by the
  saas_subscription/costs/saas_cost pipeline): BilledCost = 0 (nothing is invoiced by the day),
  EffectiveCost = ListCost = ContractedCost = daily_cost (the amortised share of the purchase);
  ChargeFrequency Usage-Based; ConsumedQuantity = PricingQuantity = seats.
So SUM(BilledCost) is what the vendors invoiced in the range, SUM(EffectiveCost) the amortised cost.

The vendor is the provider of every kind (InvoiceIssuer, Provider, Publisher, ServiceProvider, HostProvider):
the org buys the seats from the vendor, which also runs the service. `vendors` (step config) maps the
`provider` slug to a display name, a FOCUS ServiceCategory and optionally a ServiceSubcategory; unmapped
vendors keep their slug as name and get `default_service_category` ("Other").

Config (all optional): start_date/end_date (cost days; else run parameters, else yesterday), max_range_days,
billing_account_id (default: the org slug) and its name (billing_account_names {id: name}, else
billing_account_name, else the id), vendors {slug: {name, category, subcategory}},
default_service_category, subscriptions/daily {table, schema_file}, destination {table, schema_file}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.processors._llm.params import invalid
from convergence.processors.focus._base import Branch, FocusSource, billing_account, numeric, sql_text
from convergence.processors.focus._spec import SERVICE_CATEGORIES, SUBCATEGORIES, default_subcategory

_MONTHS = """CASE LOWER(billing_cycle) WHEN 'annual' THEN 12 WHEN 'yearly' THEN 12 WHEN 'quarterly' THEN 3
      ELSE 1 END"""  # as calculate_subscription_cost
_MONTH_INDEX = "(EXTRACT(YEAR FROM {d}) * 12 + EXTRACT(MONTH FROM {d}) - 1)"
_MONTH_START = "TIMESTAMP(DATE_TRUNC({d}, MONTH))"
# No DATE_ADD (see processors/focus/_llm.py): month arithmetic by DATE(year, month, day).
_MONTH_END = "TIMESTAMP_ADD(TIMESTAMP(LAST_DAY({d})), INTERVAL 1 DAY)"


def _vendor_case(vendors: Mapping[str, Any], key: str, default: str) -> str:
    whens = [f"WHEN {sql_text(str(slug).lower())} THEN {sql_text(value[key])}"
             for slug, value in vendors.items() if isinstance(value, Mapping) and value.get(key)]
    return f"CASE LOWER(provider) {' '.join(whens)} ELSE {default} END" if whens else default


def vendors_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """`vendors` with every mapped vendor's subcategory filled in ("Other (<category>)" when not given), and
    the default category. Categories and subcategories must be FOCUS 1.2 values, the subcategory under its
    category."""
    vendors = config.get("vendors") or {}
    if not isinstance(vendors, Mapping):
        raise invalid("vendors must be a mapping {provider: {name, category}}")
    default = str(config.get("default_service_category") or "Other")
    if default not in SERVICE_CATEGORIES:
        raise invalid(f"default_service_category {default!r} is not a FOCUS ServiceCategory")
    out: dict[str, Any] = {}
    for slug, value in vendors.items():
        if not isinstance(value, Mapping):
            raise invalid(f"vendors.{slug} must be a mapping {{name, category}}")
        category = value.get("category")
        if category is not None and category not in SERVICE_CATEGORIES:
            raise invalid(f"vendors.{slug}.category {category!r} is not a FOCUS ServiceCategory")
        category = str(category or default)
        subcategory = value.get("subcategory")
        if subcategory is not None and subcategory not in SUBCATEGORIES[category]:
            raise invalid(f"vendors.{slug}.subcategory {subcategory!r} is not a FOCUS ServiceSubcategory of "
                          f"{category}")
        out[slug] = {**value, "category": category, "subcategory": str(subcategory or default_subcategory(category))}
    return out, default


class SaasFocus(FocusSource):
    source = "saas"
    inputs = {
        "subscriptions": ("saas_subscriptions", "configs/saas_subscription/schemas/saas_subscriptions.json"),
        "daily": ("saas_subscription_cost_daily",
                  "configs/saas_subscription/schemas/saas_subscription_cost_daily.json"),
    }

    def extra_params(self, config: Mapping[str, Any], context: RunContext) -> dict[str, Any]:
        account, name = billing_account(config, context.org_slug)
        return {"billing_account_id": account, "billing_account_name": name}

    def ctes(self, refs: Mapping[str, str], config: Mapping[str, Any], context: RunContext) -> str:
        start_index = _MONTH_INDEX.format(d="start_date")
        day_index = _MONTH_INDEX.format(d="d")
        return f"""WITH subs AS (
  SELECT subscription_id, provider, plan_name, quantity, unit_price, currency, LOWER(billing_cycle) AS billing_cycle,
    start_date, end_date, {_MONTHS} AS cycle_months
  FROM {refs['subscriptions']}
  WHERE org_slug = @org_slug AND IFNULL(LOWER(status), 'active') != 'deleted'
    AND start_date <= @end_date AND (end_date IS NULL OR end_date >= @start_date)
),
cycles AS (
  SELECT s.*, d AS cycle_start, {day_index} + cycle_months AS end_index
  FROM subs AS s
  CROSS JOIN UNNEST(GENERATE_DATE_ARRAY(GREATEST(s.start_date, @start_date),
                                        LEAST(IFNULL(s.end_date, @end_date), @end_date))) AS d
  WHERE MOD({day_index} - {start_index}, cycle_months) = 0
    AND EXTRACT(DAY FROM d) = LEAST(EXTRACT(DAY FROM start_date), EXTRACT(DAY FROM LAST_DAY(d)))
),
purchases AS (
  SELECT c.*, DATE(DIV(end_index, 12), MOD(end_index, 12) + 1,
    LEAST(EXTRACT(DAY FROM start_date),
          EXTRACT(DAY FROM LAST_DAY(DATE(DIV(end_index, 12), MOD(end_index, 12) + 1, 1))))) AS cycle_end
  FROM cycles AS c
),
daily AS (
  SELECT cost_date, subscription_id, provider, plan_name, billing_cycle, quantity, currency, daily_cost
  FROM {refs['daily']}
  WHERE org_slug = @org_slug AND cost_date BETWEEN @start_date AND @end_date
)"""  # noqa: S608 - validated names

    def branches(self, refs: Mapping[str, str], config: Mapping[str, Any], context: RunContext) -> list[Branch]:
        vendors, default_category = vendors_config(config)
        name = _vendor_case(vendors, "name", "provider")
        common = {
            "InvoiceIssuerName": name, "ProviderName": name, "PublisherName": name,
            "ServiceProviderName": name, "HostProviderName": name,
            # A vendor selling two services (GitHub: repositories, Copilot) names each with `service`.
            "ServiceName": _vendor_case(vendors, "service", name),
            "ServiceCategory": _vendor_case(vendors, "category", sql_text(default_category)),
            "ServiceSubcategory": _vendor_case(vendors, "subcategory", sql_text(default_subcategory(default_category))),
            "BillingAccountId": "@billing_account_id", "BillingAccountName": "@billing_account_name",
            "BillingAccountType": "'Organization'",
            "BillingCurrency": "UPPER(currency)", "PricingCurrency": "UPPER(currency)",
            "PricingCategory": "'Standard'",
            "PricingQuantity": numeric("quantity"), "PricingUnit": "'Seats'",
            "ResourceId": "subscription_id", "ResourceName": "CONCAT(provider, ' ', IFNULL(plan_name, ''))",
            "ResourceType": "'Subscription'",
            "SkuId": "CONCAT(provider, ':', IFNULL(plan_name, ''))",
            "SkuPriceId": "CONCAT(provider, ':', IFNULL(plan_name, ''), ':', billing_cycle)",
            "SkuMeter": "'Seats'",
        }
        purchase = {
            **common,
            "ChargeCategory": "'Purchase'",
            "ChargeFrequency": "CASE WHEN cycle_start = start_date AND end_date IS NOT NULL AND end_date < cycle_end "
                               "THEN 'One-Time' ELSE 'Recurring' END",
            "ChargeDescription": "CONCAT(provider, ' ', IFNULL(plan_name, ''), ': ', CAST(quantity AS STRING), "
                                 "' seat(s), ', billing_cycle, ' purchase')",
            "BilledCost": numeric("unit_price * quantity"), "EffectiveCost": numeric("0"),
            "ListCost": numeric("unit_price * quantity"), "ContractedCost": numeric("unit_price * quantity"),
            "ListUnitPrice": numeric("unit_price"), "ContractedUnitPrice": numeric("unit_price"),
            "PricingCurrencyListUnitPrice": numeric("unit_price"),
            "PricingCurrencyContractedUnitPrice": numeric("unit_price"),
            "PricingCurrencyEffectiveCost": numeric("0"),
            "ChargePeriodStart": "TIMESTAMP(cycle_start)", "ChargePeriodEnd": "TIMESTAMP(cycle_end)",
            "BillingPeriodStart": _MONTH_START.format(d="cycle_start"),
            "BillingPeriodEnd": _MONTH_END.format(d="cycle_start"),
            "x_ChargeDate": "cycle_start", "x_CostBasis": "'billed'",
            "x_SourceTable": sql_text(refs["subscriptions"].split(".")[-1].strip("`")),
        }
        usage = {
            **common,
            "ChargeCategory": "'Usage'", "ChargeFrequency": "'Usage-Based'",
            "ChargeDescription": "CONCAT(provider, ' ', IFNULL(plan_name, ''), ': ', CAST(quantity AS STRING), "
                                 "' seat(s), amortised ', billing_cycle, ' subscription')",
            "BilledCost": numeric("0"), "EffectiveCost": numeric("daily_cost"),
            "ListCost": numeric("daily_cost"), "ContractedCost": numeric("daily_cost"),
            "PricingCurrencyEffectiveCost": numeric("daily_cost"),
            "ConsumedQuantity": numeric("quantity"), "ConsumedUnit": "'Seats'",
            "ChargePeriodStart": "TIMESTAMP(cost_date)",
            "ChargePeriodEnd": "TIMESTAMP_ADD(TIMESTAMP(cost_date), INTERVAL 1 DAY)",
            "BillingPeriodStart": _MONTH_START.format(d="cost_date"),
            "BillingPeriodEnd": _MONTH_END.format(d="cost_date"),
            "x_ChargeDate": "cost_date", "x_CostBasis": "'amortized'",
            "x_SourceTable": sql_text(refs["daily"].split(".")[-1].strip("`")),
        }
        return [Branch(purchase, "FROM purchases"), Branch(usage, "FROM daily")]


def get_engine() -> SaasFocus:
    return SaasFocus()
