"""Shared mapping of the LLM providers' cost tables into FOCUS rows.

Per org and day:
- billed rows (the provider's cost report, the figures that reconcile to the invoice) become FOCUS Usage
  rows with BilledCost = EffectiveCost = ListCost = ContractedCost = the billed amount
  (x_CostBasis = 'billed');
- on days the cost report has no row yet (it lags), the calculated cost (usage x the org's price list)
  fills in, one row per model and token type: BilledCost = 0 (nothing is invoiced on that basis yet),
  EffectiveCost = ListCost = ContractedCost = the calculated cost, ConsumedQuantity/PricingQuantity =
  tokens (x_CostBasis = 'calculated'). Unpriced usage (is_priced = false) has no cost and is left out.
When the cost report later arrives, the next run of the day replaces the calculated rows by billed ones.

SubAccountName: the provider's Admin API names the sub-accounts (OpenAI `GET /v1/organization/projects`,
Anthropic `GET /v1/organizations/workspaces`, archived ones included), read at every run with the org's
stored admin key; the step config's `sub_account_names` {id: name} names the ids the API does not (and all
of them when the org has no credential, the API fails, or `names_from_provider: false`); else the id
itself. When the API cannot be read, the names the org's `*.names` step last stored (`openai_projects`,
`anthropic_workspaces`) stand in for it. The cost tables carry only ids (no user or API key id: the FOCUS
rows have none to name). A names failure never fails the mapping: the step result says where the names
came from (`sub_account_names_from`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import StepError
from convergence.processors._llm.bq import Warehouse, identifier
from convergence.processors._llm.client import provider_secret
from convergence.processors._llm.params import invalid
from convergence.processors.focus._base import (
    Branch,
    FocusSource,
    billing_account,
    named,
    names_config,
    numeric,
    sql_text,
)

log = structlog.get_logger(__name__)

AI_CATEGORY = "'AI and Machine Learning'"
AI_SUBCATEGORY = "'Generative AI'"
_MONTH_START = "TIMESTAMP(DATE_TRUNC({d}, MONTH))"
# No DATE_ADD/DATE_SUB: on the emulator a DATE_ADD anywhere in the statement sends it down a path that
# rounds every NUMERIC to 3 decimals; TIMESTAMP_ADD and LAST_DAY keep them (same results on BigQuery).
_MONTH_END = "TIMESTAMP_ADD(TIMESTAMP(LAST_DAY({d})), INTERVAL 1 DAY)"


@dataclass(frozen=True)
class TokenLine:
    token_type: str      # x_TokenType / SkuMeter label
    quantity: str        # column of the calculated table
    cost: str            # column of the calculated table
    unit: str = "Tokens"


def provider_columns(provider: str, service: str) -> dict[str, str]:
    name = sql_text(provider)
    return {
        "InvoiceIssuerName": name, "ProviderName": name, "PublisherName": name,
        "ServiceProviderName": name, "HostProviderName": name,
        "ServiceName": sql_text(service), "ServiceCategory": AI_CATEGORY, "ServiceSubcategory": AI_SUBCATEGORY,
        "ChargeCategory": "'Usage'", "ChargeFrequency": "'Usage-Based'", "PricingCategory": "'Standard'",
        "BillingAccountId": "@billing_account_id", "BillingAccountName": "@billing_account_name",
        "BillingAccountType": "'Organization'",
    }


def day_columns(date_column: str) -> dict[str, str]:
    return {
        "x_ChargeDate": date_column,
        "BillingPeriodStart": _MONTH_START.format(d=date_column),
        "BillingPeriodEnd": _MONTH_END.format(d=date_column),
    }


class LlmFocusSource(FocusSource):
    provider = ""
    service = ""
    credential_provider = ""  # as stored in org_integration_credentials
    sub_account: tuple[str, str] = ("project_id", "Project")  # column of both tables, SubAccountType
    names_table: tuple[str, str] = ("", "")  # the `*.names` step's table of sub-accounts, and its id column
    billed_columns: Sequence[str] = ()      # columns the `billed` CTE keeps
    calculated_columns: Sequence[str] = ()  # columns the `calc` CTE keeps
    token_lines: Sequence[TokenLine] = ()

    def extra_params(self, config: Mapping[str, Any], context: RunContext) -> dict[str, Any]:
        account, name = billing_account(config, context.org_slug)
        return {"billing_account_id": account, "billing_account_name": name, **self.sub_account_name(config)[1]}

    async def provider_names(self, secret: str, config: Mapping[str, Any], context: RunContext) -> dict[str, str]:
        """{sub-account id: name} from the provider's Admin API."""
        raise NotImplementedError

    async def prepare(self, config: Mapping[str, Any], context: RunContext) -> tuple[Mapping[str, Any], dict[str, Any]]:
        use_api = config.get("names_from_provider", True)
        if not isinstance(use_api, bool):
            raise invalid("names_from_provider must be true or false")
        configured = names_config(config, "sub_account_names")
        if not use_api:
            return config, {"sub_account_names_from": "configuration"}
        try:
            secret = await provider_secret(config, context, self.credential_provider)
            listed = await self.provider_names(secret, config, context)
        except StepError as error:
            stored = await self.stored_names(context)
            if stored:
                log.warning("sub-account names not read from the provider; the names table used",
                            provider=self.provider, code=error.code)
                return ({**config, "sub_account_names": {**configured, **stored}},
                        {"sub_account_names_from": f"names table {self.names_table[0]} ({error.code}, "
                                                   f"{len(stored)} named)"})
            log.warning("sub-account names not read from the provider; configuration used", provider=self.provider,
                        code=error.code)
            return config, {"sub_account_names_from": f"configuration ({error.code})"}
        return ({**config, "sub_account_names": {**configured, **listed}},
                {"sub_account_names_from": f"provider API ({len(listed)} named)"})

    async def stored_names(self, context: RunContext) -> dict[str, str]:
        """{id: name} from the org's names table (the `*.names` step's last run), {} when there is none."""
        table, id_column = self.names_table
        if not table:
            return {}
        try:
            warehouse = Warehouse(context.services, context.org_slug)
            if not await warehouse.table_exists(table):
                return {}
            rows, _ = await warehouse.query(
                f"SELECT {identifier(id_column, 'column')} AS id, name FROM {warehouse.ref(table)} "  # noqa: S608
                "WHERE org_slug = @org_slug AND name IS NOT NULL", {"org_slug": context.org_slug})
        except StepError as error:
            log.warning("names table not read", table=table, code=error.code)
            return {}
        return {str(r["id"]): str(r["name"]) for r in rows}

    def sub_account_name(self, config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """SubAccountName: the names from `prepare` (provider API over the step config's `sub_account_names`),
        else the id itself."""
        return named(self.sub_account[0], names_config(config, "sub_account_names"), "sub_account")

    def ctes(self, refs: Mapping[str, str], config: Mapping[str, Any], context: RunContext) -> str:
        billed = ", ".join(self.billed_columns)
        calc = ", ".join(self.calculated_columns)
        needed = [*self.calculated_columns]
        for line in self.token_lines:
            needed += [c for c in (line.quantity, line.cost) if c not in needed]
        lines = "\n  UNION ALL\n  ".join(
            f"SELECT {calc}, {sql_text(line.token_type)} AS token_type, {line.quantity} AS quantity, "  # noqa: S608
            f"{sql_text(line.unit)} AS quantity_unit, {line.cost} AS cost FROM calc"
            for line in self.token_lines)
        return f"""WITH billed AS (
  SELECT {billed} FROM {refs['billed']}
  WHERE org_slug = @org_slug AND cost_date BETWEEN @start_date AND @end_date
),
calc AS (
  SELECT {", ".join(needed)} FROM {refs['calculated']}
  WHERE org_slug = @org_slug AND cost_date BETWEEN @start_date AND @end_date AND is_priced
    AND cost_date NOT IN (SELECT DISTINCT cost_date FROM billed)
),
calc_lines AS (
  {lines}
)"""  # noqa: S608 - validated names

    def billed_branch(self, refs: Mapping[str, str]) -> dict[str, str]:
        raise NotImplementedError

    def calculated_branch(self, refs: Mapping[str, str]) -> dict[str, str]:
        raise NotImplementedError

    def branches(self, refs: Mapping[str, str], config: Mapping[str, Any], context: RunContext) -> list[Branch]:
        sub_column, sub_type = self.sub_account
        common = {**provider_columns(self.provider, self.service), **day_columns("cost_date"),
                  "SubAccountId": sub_column, "SubAccountName": self.sub_account_name(config)[0],
                  "SubAccountType": f"CASE WHEN {sub_column} IS NOT NULL THEN {sql_text(sub_type)} END"}
        billed = {
            **common,
            "BilledCost": numeric("amount_usd"), "EffectiveCost": numeric("amount_usd"),
            "PricingCurrencyEffectiveCost": numeric("amount_usd"),
            "ListCost": numeric("amount_usd"), "ContractedCost": numeric("amount_usd"),
            "BillingCurrency": "UPPER(currency)", "PricingCurrency": "UPPER(currency)",
            "ChargePeriodStart": "bucket_start", "ChargePeriodEnd": "bucket_end",
            "x_CostBasis": "'billed'", "x_SourceTable": sql_text(refs["billed"].split(".")[-1].strip("`")),
            "x_Model": "model",
            **self.billed_branch(refs),
        }
        calculated = {
            **common,
            "BilledCost": numeric("0"), "EffectiveCost": numeric("cost"),
            "PricingCurrencyEffectiveCost": numeric("cost"),
            "ListCost": numeric("cost"), "ContractedCost": numeric("cost"),
            "BillingCurrency": "UPPER(IFNULL(currency, 'USD'))", "PricingCurrency": "UPPER(IFNULL(currency, 'USD'))",
            "ChargePeriodStart": "TIMESTAMP(cost_date)",
            "ChargePeriodEnd": "TIMESTAMP_ADD(TIMESTAMP(cost_date), INTERVAL 1 DAY)",
            "ChargeDescription": "CONCAT(IFNULL(model, '(no model)'), ', ', token_type, ' (calculated)')",
            "ConsumedQuantity": numeric("quantity"), "ConsumedUnit": "quantity_unit",
            "PricingQuantity": numeric("quantity"), "PricingUnit": "quantity_unit",
            "SkuId": "model", "SkuMeter": "token_type", "x_Model": "model", "x_TokenType": "token_type",
            "x_CostBasis": "'calculated'",
            "x_SourceTable": sql_text(refs["calculated"].split(".")[-1].strip("`")),
            **self.calculated_branch(refs),
        }
        return [Branch(billed, "FROM billed"),
                Branch(calculated, "FROM calc_lines WHERE cost IS NOT NULL AND (quantity > 0 OR cost <> 0)")]
