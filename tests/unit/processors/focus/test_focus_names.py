"""Account names in focus_cost_daily, on the emulator: names from the step configuration reach
BillingAccountName and SubAccountName for every source (OpenAI, Anthropic, GCP, SaaS), the GCP export's
own project name wins over configuration, and an account without a name falls back to its id."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from convergence.pipeline import Executor, PipelineLoader, ProcessorRegistry, RunContext, RunStatus
from convergence.processors.focus.conformance import check, format_report
from tests.support.llm import CONFIGS, DictCredentials, LlmTestServices, RecordingObserver, make_settings, new_org
from tests.unit.processors.focus.test_focus import D1, D2, GCP_SCHEMA, focus_rows, gcp_row, seed_sources, write

pytestmark = [pytest.mark.emulator]

GCP_ACCOUNT = "01ABCD-EF2345-678901"
SUBS_SCHEMA = "configs/saas_subscription/schemas/saas_subscriptions.json"
DAILY_SCHEMA = "configs/saas_subscription/schemas/saas_subscription_cost_daily.json"


@pytest.fixture
def bq(bq_client):
    return bq_client


@pytest.fixture
async def env(bq):
    settings = make_settings(bq.project)
    services = LlmTestServices(settings, bq, DictCredentials({}))
    yield services
    await services.aclose()


async def run_with(path: str, org: str, services: Any, names: dict[str, Any], parameters: dict[str, str]) -> None:
    """The real pipeline with `names` added to its (only) step's configuration."""
    config = PipelineLoader(CONFIGS).load(path)
    step = config.steps[0]
    config = config.model_copy(update={"steps": [step.model_copy(update={"config": {**step.config, **names}})]})
    context = RunContext(org_slug=org, run_id=f"run_{uuid.uuid4().hex[:12]}", pipeline_id=config.pipeline_id,
                         parameters=parameters, services=services)
    result = await Executor(ProcessorRegistry(), observer=RecordingObserver()).run(config, context)
    assert result.status is RunStatus.SUCCESS, result.error


def seed(services: Any, org: str) -> None:
    seed_sources(services, org)  # OpenAI project proj_a, Anthropic workspace wrk_1
    named = gcp_row("2026-03-02T10:00:00+00:00", "Compute Engine", "N2 Instance Core", 1.5, invoice="202603")
    unnamed = {**gcp_row("2026-03-02T11:00:00+00:00", "Cloud Storage", "Standard Storage", 0.5, invoice="202603"),
               "project_id": "acme-dev", "project_name": None}
    write(services, org, "gcp_billing_daily_raw", GCP_SCHEMA, [named, unnamed])
    write(services, org, "saas_subscriptions", SUBS_SCHEMA, [{
        "subscription_id": "sub_slack", "org_slug": org, "provider": "slack", "plan_name": "pro", "quantity": 2,
        "unit_price": "8.75", "currency": "USD", "billing_cycle": "monthly", "start_date": D1, "end_date": None,
        "status": "active"}])
    write(services, org, "saas_subscription_cost_daily", DAILY_SCHEMA, [{
        "org_slug": org, "cost_date": D2, "subscription_id": "sub_slack", "provider": "slack", "plan_name": "pro",
        "billing_cycle": "monthly", "quantity": 2, "unit_price": "8.75", "currency": "USD", "monthly_cost": "17.5",
        "daily_cost": "0.564516129", "calculated_at": "2026-03-04T00:00:00+00:00"}])


def names_by_source(rows: list[dict[str, Any]]) -> dict[str, set[tuple[Any, ...]]]:
    out: dict[str, set[tuple[Any, ...]]] = {}
    for r in rows:
        out.setdefault(r["x_SourcePipeline"], set()).add(
            (r["BillingAccountId"], r["BillingAccountName"], r["SubAccountId"], r["SubAccountName"]))
    return out


async def test_names_from_configuration_reach_focus_and_unnamed_accounts_fall_back_to_the_id(env, bq):
    services = env
    params = {"start_date": D1, "end_date": D2}
    named_org, plain_org = new_org(bq, services.settings, "focus_names"), new_org(bq, services.settings, "focus_names")
    sources = ("openai", "anthropic", "gcp", "saas")
    for org in (named_org, plain_org):
        seed(services, org)

    # One configuration for every org: names keyed by the ids. An id it does not name keeps the id.
    config = {
        "openai": {"billing_account_names": {named_org: "Acme OpenAI org"},
                   "sub_account_names": {"proj_a": "Research", "proj_unused": "Unused"}},
        "anthropic": {"billing_account_names": {named_org: "Acme Anthropic org"},
                      "sub_account_names": {"wrk_1": "Claude Prod"}},
        "gcp": {"billing_account_names": {GCP_ACCOUNT: "Acme Billing"},
                "sub_account_names": {"acme-dev": "Acme Dev", "acme-prod": "not used: the export names it"}},
        "saas": {"billing_account_names": {named_org: "Acme SaaS"}},
    }
    for source in sources:
        await run_with(f"focus/cost/{source}", named_org, services, config[source], params)
    named = names_by_source(focus_rows(bq, services.settings, named_org))
    assert named == {
        "openai": {(named_org, "Acme OpenAI org", "proj_a", "Research")},
        "anthropic": {(named_org, "Acme Anthropic org", "wrk_1", "Claude Prod")},
        "gcp": {(GCP_ACCOUNT, "Acme Billing", "acme-prod", "Acme Prod"),  # project.name from the export
                (GCP_ACCOUNT, "Acme Billing", "acme-dev", "Acme Dev")},     # no project.name: configuration
        "saas": {(named_org, "Acme SaaS", None, None)},
    }
    report = check(bq, services.settings, named_org)
    assert report.ok and report.rows_checked == 6 + 5 + 2 + 2, format_report(report)

    # The same configuration for an org it does not name, and no configuration: the ids themselves.
    for source in sources:
        await run_with(f"focus/cost/{source}", plain_org, services, config[source] if source != "gcp" else {},
                       params)
    plain = names_by_source(focus_rows(bq, services.settings, plain_org))
    assert plain["openai"] == {(plain_org, plain_org, "proj_a", "Research")}  # project ids are global
    assert plain["saas"] == {(plain_org, plain_org, None, None)}
    assert plain["gcp"] == {(GCP_ACCOUNT, GCP_ACCOUNT, "acme-prod", "Acme Prod"),
                            (GCP_ACCOUNT, GCP_ACCOUNT, "acme-dev", "acme-dev")}
    await run_with("focus/cost/anthropic", plain_org, services, {}, params)
    assert names_by_source(focus_rows(bq, services.settings, plain_org))["anthropic"] == {
        (plain_org, plain_org, "wrk_1", "wrk_1")}

    # A single configured name (billing_account_name) still names the account; an empty one is refused.
    await run_with("focus/cost/openai", plain_org, services, {"billing_account_name": "Plain Co"}, params)
    assert {r["BillingAccountName"] for r in focus_rows(bq, services.settings, plain_org)
            if r["x_SourcePipeline"] == "openai"} == {"Plain Co"}
    with pytest.raises(AssertionError, match="sub_account_names.proj_a must be a non-empty name"):
        await run_with("focus/cost/openai", plain_org, services, {"sub_account_names": {"proj_a": " "}}, params)
