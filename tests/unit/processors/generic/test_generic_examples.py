"""The example pipelines of configs/example/ end to end, and generic.local_bq_transformer's write modes.

- example/usage/example_elt_pipeline: REST API (stand-in) -> raw JSON -> SQL -> typed table (MERGE).
- example/finance/subscription_costs_transform: stored procedure -> monthly rollup per provider.
"""

from __future__ import annotations

import math

import pytest

from convergence.devstack.providers.rest_server import ExpectedAuth, RestStandIn
from convergence.pipeline import RunStatus
from tests.support.generic import DictCredentials, TestServices, make_settings, new_org, pipeline, run, table_rows

pytestmark = [pytest.mark.emulator]
TOKEN = "vendor-token-0042"


@pytest.fixture
async def services(local_stack):
    made = []

    def make(credentials=None, **overrides):
        created = TestServices(make_settings(local_stack, **overrides), credentials)
        made.append(created)
        return created

    yield make
    for item in made:
        await item.aclose()


async def test_example_elt_pipeline_extracts_then_transforms(services):
    server = RestStandIn(total=730, page_size=100, auth=ExpectedAuth("bearer", TOKEN))
    base = await server.start()
    try:
        org = new_org("elt")
        svc = services(DictCredentials({(org, "VENDOR_API"): TOKEN}))
        for _ in range(2):  # the second run re-extracts; the typed table still has one row per user
            result, context = await run("example/usage/example_elt_pipeline", svc, org,
                                        parameters={"vendor_api_base_url": base})
            assert result.status is RunStatus.SUCCESS, result.error
            assert result.step("extract_users").rows_processed == 730
            assert result.step("extract_users").result["credential_source"] == "org_integration_credentials"
            assert result.step("transform_users").result["write_mode"] == "merge"
            assert result.step("notify_on_failure").result["deferred_to_run_end"] is True
        users = table_rows(svc, org, "vendor_users", order_by="id")
        assert [u["id"] for u in users] == list(range(730))
        assert users[7] | {"ingested_at": None} == {
            "org_slug": org, "id": 7, "name": "record-0000007", "email": "user7@example.com", "amount": 0.07,
            "active": False, "tier": "pro", "tags": '["alpha","beta"]', "ingested_at": None}
        assert len(table_rows(svc, org, "vendor_users_raw")) == 1460  # raw keeps both extractions (history)
    finally:
        await server.stop()


async def test_example_finance_pipeline_rolls_up_per_provider_and_month(services):
    import uuid

    from tests.unit.processors.sql.test_procedures import EXPECTED, SUBSCRIPTIONS, _seed_subscriptions

    svc = services(central_dataset=f"organizations_{uuid.uuid4().hex[:8]}")
    org = new_org("fin")
    _seed_subscriptions(svc, org)
    window = {"start_date": "2025-03-01", "end_date": "2025-04-30"}
    for _ in range(2):
        result, _ = await run("example/finance/subscription_costs_transform", svc, org, parameters=window)
        assert result.status is RunStatus.SUCCESS, result.error
    monthly = table_rows(svc, org, "saas_subscription_cost_monthly", order_by="cost_month, provider")
    provider_of = {s[0]: s[1] for s in SUBSCRIPTIONS}
    expected: dict[tuple[str, str], float] = {}
    for (subscription, month), cost in EXPECTED.items():
        key = (f"{month}-01", provider_of[subscription])
        expected[key] = expected.get(key, 0.0) + cost
    got = {(r["cost_month"].isoformat(), r["provider"]): float(r["total_cost"]) for r in monthly}
    assert set(got) == set(expected)
    for key, cost in expected.items():
        assert math.isclose(got[key], cost, abs_tol=1e-6), key
    assert result.step("transform_monthly").rows_processed == len(expected)


async def test_transformer_write_modes_and_sql_safety(services):
    svc = services()
    org = new_org("trf")
    select = ("SELECT @org_slug AS org_slug, DATE_ADD(@start_date, INTERVAL n DAY) AS cost_date, "
              "CONCAT('sub_', CAST(n AS STRING)) AS subscription_id, 'acme' AS provider, 'monthly' AS billing_cycle, "
              "1 AS quantity, NUMERIC '3' AS unit_price, 'USD' AS currency, NUMERIC '3' AS monthly_cost, "
              "NUMERIC '0.1' AS daily_cost, CURRENT_TIMESTAMP() AS calculated_at "
              "FROM UNNEST(GENERATE_ARRAY(0, DATE_DIFF(@end_date, @start_date, DAY))) AS n")

    def step(mode: str, **extra) -> dict:
        return {"step_id": "transform", "ps_type": "generic.local_bq_transformer", "config": {
            "query": select, "destination": {
                "table": "costs", "write_mode": mode, "date_column": "cost_date",
                "key_columns": ["cost_date"],
                "schema_file": "configs/saas_subscription/schemas/saas_subscription_cost_daily.json", **extra}}}

    march = {"start_date": "2025-03-01", "end_date": "2025-03-10"}
    result, _ = await run(pipeline([step("append")]), svc, org, parameters=march)
    assert result.status is RunStatus.SUCCESS and result.steps[0].rows_processed == 10
    result, _ = await run(pipeline([step("append")]), svc, org, parameters=march)
    assert len(table_rows(svc, org, "costs")) == 20  # append appends
    result, _ = await run(pipeline([step("range_replace")]), svc, org, parameters=march)
    assert result.steps[0].rows_processed == 10 and len(table_rows(svc, org, "costs")) == 10
    result, _ = await run(pipeline([step("merge")]), svc, org, parameters={"start_date": "2025-03-06",
                                                                           "end_date": "2025-03-15"})
    assert len(table_rows(svc, org, "costs")) == 15  # 5 updated, 5 new
    result, _ = await run(pipeline([step("overwrite")]), svc, org, parameters={"date": "2025-04-01"})
    assert [r["cost_date"].isoformat() for r in table_rows(svc, org, "costs")] == ["2025-04-01"]

    # A value placeholder in SQL is refused with a pointer to query parameters.
    bad = step("append")
    bad["config"]["query"] = select.replace("@org_slug AS org_slug", "'{org_slug}' AS org_slug")
    result, _ = await run(pipeline([bad]), svc, org, parameters=march)
    assert result.steps[0].error.code == "CONFIG_INVALID" and "@org_slug" in result.steps[0].error.message
    # A second statement is refused.
    bad["config"]["query"] = select + "; DROP TABLE x"
    result, _ = await run(pipeline([bad]), svc, org, parameters=march)
    assert result.steps[0].error.code == "CONFIG_INVALID" and "single SELECT" in result.steps[0].error.message
