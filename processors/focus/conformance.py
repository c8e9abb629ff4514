"""FOCUS conformance check of an org's `focus_cost_daily`: the column rules of FOCUS 1.2 (+1.3 provider
columns) that can be checked in SQL. Every violated rule is reported with its row count and a sample.

- presence: every mandatory column (21 of FOCUS 1.2, ServiceProviderName and HostProviderName of 1.3)
  exists in the table (table metadata);
- not_null.<Column>: mandatory columns FOCUS 1.2 marks "Allows nulls: False" have no NULL;
- allowed values: ChargeCategory, ChargeClass, ChargeFrequency, PricingCategory, ServiceCategory, and
  ServiceSubcategory under "AI and Machine Learning";
- combinations: ChargeFrequency is not Usage-Based for a Purchase; PricingCategory is null for Tax and set
  for Usage/Purchase rows that are not corrections; ConsumedQuantity/ConsumedUnit only on Usage rows and
  together; PricingUnit with PricingQuantity;
- periods: ChargePeriodStart < ChargePeriodEnd, BillingPeriodStart < BillingPeriodEnd; a charge (not a
  correction) starts within its BillingPeriod; a Usage charge also ends within it (a Purchase may cover a
  longer term, as in FOCUS 1.2's SaaS examples);
- currencies: BillingCurrency and PricingCurrency have the ISO 4217 format (three upper-case letters);
- Tags is a JSON object text.

Every check (the CLI and the step) records one row per rule result, PASS or FAIL with its counts, in the
central `org_meta_dq_results` (`record`): one streaming insert per check through the warehouse writer,
never one write per rule, never DML (see `record`).

`processors.focus.conformance` also is ps_type `focus.conformance`: a pipeline step that records its results
and then fails (PermanentStepError FOCUS_NONCONFORMANT) when a rule is violated for the run's dates.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from convergence.pipeline.context import RunContext
from convergence.pipeline.errors import ErrorCode, PermanentStepError
from convergence.pipeline.models import StepConfig
from convergence.processors.focus._base import FOCUS_TABLE
from convergence.processors.focus._spec import (
    CHARGE_CATEGORIES,
    CHARGE_FREQUENCIES,
    PRICING_CATEGORIES,
    SERVICE_CATEGORIES,
    SUBCATEGORIES,
)
from convergence.warehouse.facade import Warehouse
from convergence.warehouse.identifiers import validate_table
from convergence.warehouse.runlog import pipeline_logging_id

MANDATORY = (
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "BillingAccountId", "BillingAccountName",
    "BillingCurrency", "BillingPeriodStart", "BillingPeriodEnd", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargePeriodStart", "ChargePeriodEnd", "InvoiceIssuerName", "PricingQuantity",
    "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
    # FOCUS 1.3
    "ServiceProviderName", "HostProviderName",
)
# Mandatory columns that allow no NULL (FOCUS 1.2 column tables; ServiceProviderName from 1.3).
# HostProviderName is left out: its 1.3 table says nullable while its text says not (unconfirmed).
NOT_NULL = (
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "BillingAccountId", "BillingCurrency",
    "BillingPeriodStart", "BillingPeriodEnd", "ChargeCategory", "ChargePeriodStart", "ChargePeriodEnd",
    "InvoiceIssuerName", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName", "ServiceProviderName",
    # Conditional columns whose 1.2 column table also says "Allows nulls: False".
    "ServiceSubcategory", "PricingCurrency", "PricingCurrencyEffectiveCost",
)


def _subcategory_pairs() -> str:
    pairs = ", ".join(f"'{c}|{s}'" for c, subs in SUBCATEGORIES.items() for s in subs)  # fixed constants
    return f"CONCAT(ServiceCategory, '|', ServiceSubcategory) NOT IN ({pairs})"


def _in(column: str, values: Sequence[str]) -> str:
    quoted = ", ".join("'" + v.replace("'", "") + "'" for v in values)  # fixed constants above
    return f"{column} IN ({quoted})"


@dataclass(frozen=True)
class Rule:
    rule_id: str
    description: str
    violation: str  # SQL condition true for a violating row


RULES: tuple[Rule, ...] = (
    *(Rule(f"not_null.{c}", f"{c} must not be null", f"{c} IS NULL") for c in NOT_NULL),
    Rule("allowed.ChargeCategory", f"ChargeCategory is one of {', '.join(CHARGE_CATEGORIES)}",
         f"ChargeCategory IS NOT NULL AND NOT {_in('ChargeCategory', CHARGE_CATEGORIES)}"),
    Rule("allowed.ChargeClass", "ChargeClass is null or Correction",
         "ChargeClass IS NOT NULL AND ChargeClass <> 'Correction'"),
    Rule("allowed.ChargeFrequency", f"ChargeFrequency is null or one of {', '.join(CHARGE_FREQUENCIES)}",
         f"ChargeFrequency IS NOT NULL AND NOT {_in('ChargeFrequency', CHARGE_FREQUENCIES)}"),
    Rule("combo.Purchase_not_UsageBased", "ChargeFrequency is not Usage-Based when ChargeCategory is Purchase",
         "ChargeCategory = 'Purchase' AND ChargeFrequency = 'Usage-Based'"),
    Rule("allowed.PricingCategory", f"PricingCategory is null or one of {', '.join(PRICING_CATEGORIES)}",
         f"PricingCategory IS NOT NULL AND NOT {_in('PricingCategory', PRICING_CATEGORIES)}"),
    Rule("combo.PricingCategory_null_for_Tax", "PricingCategory is null when ChargeCategory is Tax",
         "ChargeCategory = 'Tax' AND PricingCategory IS NOT NULL"),
    Rule("combo.PricingCategory_set_for_Usage_Purchase",
         "PricingCategory is set for Usage and Purchase rows that are not corrections",
         "ChargeCategory IN ('Usage', 'Purchase') AND ChargeClass IS NULL AND PricingCategory IS NULL"),
    Rule("allowed.ServiceCategory", "ServiceCategory is one of the spec's values",
         f"ServiceCategory IS NOT NULL AND NOT {_in('ServiceCategory', SERVICE_CATEGORIES)}"),
    Rule("allowed.ServiceSubcategory", "ServiceSubcategory is one of the spec's values for its ServiceCategory",
         f"ServiceCategory IS NOT NULL AND ServiceSubcategory IS NOT NULL AND {_subcategory_pairs()}"),
    # {ref} and {where}: the checked table and the check's scope, for rules across rows.
    Rule("combo.ServiceName_one_subcategory", "A ServiceName has one ServiceSubcategory",
         "ServiceName IN (SELECT ServiceName FROM {ref} WHERE {where} GROUP BY ServiceName "
         "HAVING COUNT(DISTINCT IFNULL(ServiceSubcategory, '')) > 1)"),
    Rule("combo.SkuId_null_for_Tax", "SkuId is null when ChargeCategory is Tax",
         "ChargeCategory = 'Tax' AND SkuId IS NOT NULL"),
    Rule("combo.SubAccountName_with_id", "SubAccountName is set when SubAccountId is",
         "SubAccountId IS NOT NULL AND SubAccountName IS NULL"),
    Rule("combo.BillingAccountName_with_id", "BillingAccountName is set (every source's accounts can be named)",
         "BillingAccountId IS NOT NULL AND BillingAccountName IS NULL"),
    Rule("combo.ConsumedQuantity_only_Usage", "ConsumedQuantity and ConsumedUnit are null unless ChargeCategory "
         "is Usage (and not a correction)",
         "(ConsumedQuantity IS NOT NULL OR ConsumedUnit IS NOT NULL) "
         "AND (ChargeCategory <> 'Usage' OR ChargeClass = 'Correction')"),
    Rule("combo.ConsumedUnit_with_quantity", "ConsumedUnit is set exactly when ConsumedQuantity is",
         "(ConsumedQuantity IS NULL) <> (ConsumedUnit IS NULL)"),
    Rule("combo.PricingUnit_with_quantity", "PricingUnit is set when PricingQuantity is",
         "PricingQuantity IS NOT NULL AND PricingUnit IS NULL"),
    Rule("period.charge_order", "ChargePeriodStart is before ChargePeriodEnd",
         "ChargePeriodStart >= ChargePeriodEnd"),
    Rule("period.billing_order", "BillingPeriodStart is before BillingPeriodEnd",
         "BillingPeriodStart >= BillingPeriodEnd"),
    Rule("period.charge_within_billing", "A charge (not a correction) starts within its BillingPeriod; a Usage "
         "charge also ends within it",
         "ChargeClass IS NULL AND (ChargePeriodStart < BillingPeriodStart OR ChargePeriodStart >= BillingPeriodEnd "
         "OR (ChargeCategory = 'Usage' AND ChargePeriodEnd > BillingPeriodEnd))"),
    Rule("currency.BillingCurrency", "BillingCurrency is an ISO 4217 code (three upper-case letters)",
         "BillingCurrency IS NOT NULL AND NOT REGEXP_CONTAINS(BillingCurrency, r'^[A-Z]{3}$')"),
    Rule("currency.PricingCurrency", "PricingCurrency is null or an ISO 4217 code",
         "PricingCurrency IS NOT NULL AND NOT REGEXP_CONTAINS(PricingCurrency, r'^[A-Z]{3}$')"),
    Rule("format.Tags", "Tags is a JSON object (KeyValueFormat)",
         "Tags IS NOT NULL AND NOT REGEXP_CONTAINS(Tags, r'^\\s*\\{.*\\}\\s*$')"),
)

_SAMPLE = ("CONCAT(IFNULL(x_SourcePipeline, '?'), ' ', IFNULL(CAST(x_ChargeDate AS STRING), '?'), ' ', "
           "IFNULL(ChargeDescription, ''))")


@dataclass(frozen=True)
class Violation:
    rule_id: str
    description: str
    rows: int
    sample: str = ""


@dataclass
class Report:
    table: str
    rows_checked: int = 0
    rules_checked: int = 0
    violations: list[Violation] = field(default_factory=list)
    missing_table: bool = False
    # Ids of the rules that ran ("presence" first), in order: with `violations`, every rule's result.
    rules_run: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.missing_table

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "ok": self.ok, "rows_checked": self.rows_checked,
                "rules_checked": self.rules_checked, "missing_table": self.missing_table,
                "violations": [v.__dict__ for v in self.violations]}


def _scope(org_slug: str, start: date | None, end: date | None, source: str | None) -> tuple[str, dict[str, Any]]:
    parts = ["x_OrgSlug = @org_slug"]
    params: dict[str, Any] = {"org_slug": org_slug}
    if start is not None:
        parts.append("x_ChargeDate >= @start_date")
        params["start_date"] = start
    if end is not None:
        parts.append("x_ChargeDate <= @end_date")
        params["end_date"] = end
    if source:
        parts.append("x_SourcePipeline = @source")
        params["source"] = source
    return " AND ".join(parts), params


def check(client: Any, settings: Any, org_slug: str, *, dataset: str | None = None, table: str = FOCUS_TABLE,
          start: date | None = None, end: date | None = None, source: str | None = None) -> Report:
    """Run every rule on the org's rows (optionally one source, dates on x_ChargeDate). Blocking."""
    warehouse = Warehouse.outside_run(client, settings, dataset or settings.org_dataset(org_slug))
    return check_in(warehouse, org_slug, table=table, start=start, end=end, source=source)


def check_in(warehouse: Warehouse, org_slug: str, *, table: str = FOCUS_TABLE, start: date | None = None,
             end: date | None = None, source: str | None = None) -> Report:
    """`check` on a warehouse (its dataset). Blocking: a step runs it on a worker thread."""
    full = warehouse.table_id(validate_table(table))
    report = Report(table=full)
    found = warehouse.find_table_blocking(full)
    if found is None:
        report.missing_table = True
        return report
    columns = {f.name for f in found.schema}
    report.rules_checked = 1
    report.rules_run.append("presence")
    missing = [c for c in MANDATORY if c not in columns]
    if missing:
        report.violations.append(Violation("presence", "mandatory FOCUS columns are present", len(missing),
                                           ", ".join(missing)))
    rules = [r for r in RULES if all(_mentions_only(r, columns))]
    skipped = [r.rule_id for r in RULES if r not in rules]
    for rule_id in skipped:  # a rule on a missing column is a presence violation already; note it
        report.violations.append(Violation(rule_id, "rule not run: its columns are missing", 0))
    where, params = _scope(org_slug, start, end, source)
    ref = f"`{full}`"
    count = warehouse.query_blocking(f"SELECT COUNT(*) AS n FROM {ref} WHERE {where}", params)  # noqa: S608 - validated
    report.rows_checked = int(next(iter(count[0].values()))) if count else 0
    if rules:
        branches = "\nUNION ALL\n".join(
            f"SELECT '{r.rule_id}' AS rule_id, {_SAMPLE} AS sample FROM {ref} "  # noqa: S608 - validated names
            f"WHERE {where} AND ({r.violation.replace('{ref}', ref).replace('{where}', where)})"
            for r in rules)
        sql = (f"SELECT rule_id, COUNT(*) AS violating_rows, MIN(sample) AS sample FROM ({branches}) AS v "  # noqa: S608
               "GROUP BY rule_id ORDER BY rule_id")
        by_id = {r.rule_id: r for r in rules}
        for row in warehouse.query_blocking(sql, params):
            rule = by_id[row["rule_id"]]
            report.violations.append(Violation(rule.rule_id, rule.description, int(row["violating_rows"]),
                                               str(row["sample"] or "")[:120]))
    report.rules_checked += len(rules)
    report.rules_run += [r.rule_id for r in rules]
    return report


def _mentions_only(rule: Rule, columns: set[str]) -> list[bool]:
    code = re.sub(r"r?'[^']*'", "''", rule.violation)  # string literals are values, not columns
    names = {name for name in re.findall(r"\b([A-Z][A-Za-z]+)\b", code) if not name.isupper()}  # not SQL words
    return [name in columns for name in names]


def format_report(report: Report) -> str:
    if report.missing_table:
        return f"FOCUS table {report.table} does not exist: nothing to check (run the focus pipelines first)."
    lines = [f"FOCUS conformance of {report.table}: {report.rows_checked} row(s), {report.rules_checked} rule(s)"]
    if report.ok:
        lines.append("OK: no violation.")
        return "\n".join(lines)
    lines.append(f"{len(report.violations)} rule(s) violated:")
    for v in report.violations:
        lines.append(f"  FAIL {v.rule_id}: {v.description}; {v.rows} row(s)" + (f"; e.g. {v.sample}" if v.sample
                                                                                   else ""))
    return "\n".join(lines)


DQ_TABLE = "org_meta_dq_results"
DQ_SCHEMA = "configs/setup/bootstrap/schemas/org_meta_dq_results.json"
_DESCRIPTIONS = {"presence": "mandatory FOCUS columns are present", **{r.rule_id: r.description for r in RULES}}


@dataclass(frozen=True)
class CheckRun:
    """Who checked: the run (a CLI check gets its own id), and, for a pipeline step, its attempt and step."""

    run_id: str
    pipeline_id: str | None = None
    step_id: str | None = None
    pipeline_logging_id: str | None = None


def dq_rows(report: Report, org_slug: str, run: CheckRun, checked_at: datetime | None = None
            ) -> list[dict[str, Any]]:
    """One `org_meta_dq_results` row per rule result of the check: PASS (no violating row) or FAIL (with
    the violating rows), and FAIL for a rule that could not run or a missing table."""
    when = (checked_at or datetime.now(UTC)).isoformat()
    target = ".".join(report.table.split(".")[-2:])  # dataset.table
    found = {v.rule_id: v for v in report.violations}
    results: list[tuple[str, str, int, str]] = []  # (rule id, status, failed rows, message)
    if report.missing_table:
        results.append(("table", "FAIL", 0, f"FOCUS table {target} does not exist"))
    for rule_id in report.rules_run:
        violation = found.get(rule_id)
        if violation is None:
            results.append((rule_id, "PASS", 0, _DESCRIPTIONS[rule_id]))
        else:
            sample = f"; e.g. {violation.sample}" if violation.sample else ""
            results.append((rule_id, "FAIL", violation.rows, f"{violation.description}{sample}"))
    ran = set(report.rules_run)
    results += [(v.rule_id, "FAIL", 0, v.description) for v in report.violations if v.rule_id not in ran]
    rows = []
    for rule_id, status, failed, message in results:
        presence = rule_id == "presence"
        key = f"{org_slug}|{run.run_id}|{run.pipeline_logging_id or ''}|{run.step_id or ''}|{rule_id}"
        ident = hashlib.sha256(key.encode()).hexdigest()[:32]
        rows.append({
            "dq_result_id": ident, "org_slug": org_slug, "run_id": run.run_id,
            "pipeline_logging_id": run.pipeline_logging_id, "pipeline_id": run.pipeline_id, "step_id": run.step_id,
            "target_table": target, "check_name": f"focus.{rule_id}",
            "check_type": "not_null" if rule_id.startswith("not_null.") else "custom",
            "status": status, "severity": "INFO" if status == "PASS" else "ERROR",
            "expected_value": "0 missing column(s)" if presence else "0 violating row(s)",
            "actual_value": (f"{failed} missing column(s)" if presence
                             else f"{failed} violating row(s) of {report.rows_checked}"),
            "failed_rows": failed, "message": message[:1000], "checked_at": when,
        })
    return rows


def record(writer: Any, settings: Any, report: Report, org_slug: str, run: CheckRun,
           checked_at: datetime | None = None) -> Any:
    """Append the check's result rows to the central `org_meta_dq_results` in one streaming insert.

    The table is shared by every org and only ever appended to (never DML, so the streaming buffer never
    blocks anything). A load job per check would count against BigQuery's 1,500 table modifications per
    table per day ("Quotas and limits" page): 10,000 orgs checking daily would be 10,000. Streaming inserts
    do not count toward it ("Optimize load jobs" page). Returns the writer's WriteResult."""
    when = checked_at or datetime.now(UTC)
    rows = dq_rows(report, org_slug, run, when)
    # No schema file: the table is bootstrap's (partitioned by checked_at, clustered by org_slug, status);
    # the writer refuses to create it, and refuses rows of another org.
    return writer.write(settings.central_dataset, DQ_TABLE, rows, mode="append", org_slug=org_slug,
                        streaming=True)


class FocusConformance:
    """ps_type `focus.conformance`: the check as a step (config: source, start_date/end_date or run dates)."""

    async def execute(self, step: StepConfig, context: RunContext) -> dict[str, Any]:
        from convergence.processors._llm.params import date_range

        config: Mapping[str, Any] = context.resolve(step.config)
        dates = date_range(config, context.parameters)
        services = context.services
        warehouse = Warehouse(services, context.org_slug)
        report = await asyncio.to_thread(check_in, warehouse, context.org_slug,
                                         table=str(config.get("table", FOCUS_TABLE)), start=dates.start,
                                         end=dates.end, source=config.get("source"))
        run = CheckRun(context.run_id, context.pipeline_id, step.step_id,
                       pipeline_logging_id(context.run_id, context.attempt))
        # Recorded before failing the step: a nonconformant table's FAIL rows are the point of the record.
        written = await asyncio.to_thread(record, services.writer, services.settings, report, context.org_slug, run)
        if not report.ok:
            raise PermanentStepError(format_report(report)[:900], code=ErrorCode.FOCUS_NONCONFORMANT)
        return {"status": "SUCCESS", "rows_processed": report.rows_checked, "rules_checked": report.rules_checked,
                "dq_results": written.rows_written, **dates.as_result()}


def get_engine() -> FocusConformance:
    return FocusConformance()
