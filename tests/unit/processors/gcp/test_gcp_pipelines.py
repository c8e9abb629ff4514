"""GCP pipelines end to end, through the real loader and executor.

- gcp.api_extractor (configs/gcp/api/*.yml): a customer's service-account key -> OAuth2 token from a local
  token server (the key's token_uri, via google-auth) -> Cloud Billing / Compute stand-ins, every
  nextPageToken page, raw JSON rows in the org's dataset.
- gcp.bq_etl (configs/gcp/cost/billing.yml): a sample billing export in a "customer" project on the
  BigQuery emulator, read with a client built from the customer's credentials, written into the org's
  dataset with the service's client; re-running a day leaves one copy; late rows restate a day.
"""

from __future__ import annotations

import json
import math

import pytest

from convergence.devstack.providers.gcp_server import BILLING_EXPORT_SCHEMA, GcpStandIn, billing_export_row
from convergence.pipeline import RunStatus
from tests.support.generic import DictCredentials, TestServices, make_settings, new_org, query, run, table_rows

pytestmark = [pytest.mark.emulator]

CUSTOMER_PROJECT = "acme-billing-prod"
EXPORT_TABLE = "gcp_billing_export_v1_0A1B2C_3D4E5F_6A7B8C"


@pytest.fixture
async def gcp(local_stack):
    server = GcpStandIn(billing_accounts=250, zones={"us-central1-a": 520, "europe-west1-b": 0, "asia-east1-a": 30})
    await server.start()
    opened = []

    def services_for(org: str, key: dict, **overrides) -> TestServices:
        settings = make_settings(local_stack, gcp_api_url_template=server.base_url, **overrides)
        services = TestServices(settings, DictCredentials({(org, "GCP_SA"): json.dumps(key)}))
        opened.append(services)
        return services

    yield server, services_for
    for services in opened:
        await services.aclose()
    await server.stop()


async def test_billing_accounts_pipeline_gets_a_token_and_follows_next_page_token(gcp):
    server, services_for = gcp
    org = new_org("gcp")
    key = server.service_account_key(CUSTOMER_PROJECT, name=f"reader-{org}")
    services = services_for(org, key)

    result, _ = await run("gcp/api/billing_accounts", services, org)
    assert result.status is RunStatus.SUCCESS, result.error
    step = result.steps[0]
    assert step.rows_processed == 250 and step.result["pages"] == 3
    assert step.result["service_account"] == key["client_email"] and step.result["token_fetches"] == 1
    assert server.token_requests == 1
    tokens = [q.get("pageToken") for path, q in server.api_calls]
    assert tokens[0] is None and all(tokens[1:]) and len(tokens) == 3
    assert all(q["pageSize"] == "100" for _, q in server.api_calls)
    rows = table_rows(services, org, "gcp_billing_accounts_raw")
    names = sorted(json.loads(r["raw_json"])["name"] for r in rows)
    assert len(names) == len(set(names)) == 250

    # Daily re-run: the inventory is replaced (overwrite), and the cached token is reused.
    again, _ = await run("gcp/api/billing_accounts", services, org)
    assert again.status is RunStatus.SUCCESS and again.steps[0].result["token_fetches"] == 0
    assert server.token_requests == 1
    assert len(table_rows(services, org, "gcp_billing_accounts_raw")) == 250


async def test_compute_instances_pipeline_reads_every_zone_of_the_keys_project(gcp):
    server, services_for = gcp
    org = new_org("gcp")
    services = services_for(org, server.service_account_key(CUSTOMER_PROJECT, name=f"reader-{org}"))

    result, _ = await run("gcp/api/compute_instances", services, org)
    assert result.status is RunStatus.SUCCESS, result.error
    assert result.steps[0].rows_processed == 550 and result.steps[0].result["pages"] == 2
    assert {path for path, _ in server.api_calls} == {f"/compute/v1/projects/{CUSTOMER_PROJECT}/aggregated/instances"}
    rows = table_rows(services, org, "gcp_compute_instances_raw")
    zones = {json.loads(r["raw_json"])["zone"].rsplit("/", 1)[1] for r in rows}
    assert zones == {"us-central1-a", "asia-east1-a"}


async def test_a_key_the_token_server_refuses_is_a_permanent_auth_failure(gcp):
    server, services_for = gcp
    org = new_org("gcp")
    stranger = server.service_account_key(CUSTOMER_PROJECT, name=f"stranger-{org}")
    server.keys.pop(stranger["client_email"])  # Google does not know this key
    services = services_for(org, stranger)
    result, _ = await run("gcp/api/billing_accounts", services, org)
    error = result.steps[0].error
    assert result.status is RunStatus.FAILED and error.code == "PROVIDER_AUTH_FAILED" and not error.retryable
    assert stranger["private_key"][40:80] not in error.message


async def test_a_keys_token_uri_must_be_googles_in_production(gcp):
    server, services_for = gcp
    org = new_org("gcp")
    key = server.service_account_key(CUSTOMER_PROJECT, name=f"reader-{org}")
    services = services_for(org, {**key, "token_uri": "http://169.254.169.254/computeMetadata/v1/token"},
                            environment="production")
    result, _ = await run("gcp/api/billing_accounts", services, org)
    assert result.steps[0].error.code == "BLOCKED_ADDRESS"
    assert server.token_requests == 0 and server.api_calls == []


# -- the billing export copy ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def customer_export(local_stack):
    """The customer's billing export on their own project (a second project on the emulator)."""
    from google.cloud import bigquery

    client = local_stack.bigquery_client(CUSTOMER_PROJECT)
    dataset = f"billing_export_{new_org('x')}"
    client.create_dataset(f"{CUSTOMER_PROJECT}.{dataset}")
    table = bigquery.Table(f"{CUSTOMER_PROJECT}.{dataset}.{EXPORT_TABLE}",
                           schema=[bigquery.SchemaField.from_api_repr(f) for f in BILLING_EXPORT_SCHEMA])
    table.time_partitioning = bigquery.TimePartitioning(type_="DAY")  # ingestion time, like Google's export

    rows = []
    for day in ("2025-05-31", "2025-06-01", "2025-06-02"):
        rows += [billing_export_row(day, i, credit=-0.25 if i % 4 == 0 else 0.0) for i in range(40)]
    # Crossover: June 1 usage still invoiced in May.
    rows.append(billing_export_row("2025-06-01", 99, cost=7.5, invoice_month="202505"))
    client.create_table(table)

    def insert(more):
        errors = client.insert_rows_json(table.reference, more)
        assert not errors, errors

    insert(rows)
    return {"client": client, "dataset": dataset, "table": f"{CUSTOMER_PROJECT}.{dataset}.{EXPORT_TABLE}",
            "insert": insert}


def _source_totals(export, start: str, end: str) -> tuple[int, float, float]:
    rows = query(export["client"], f"""
        SELECT COUNT(*) AS n, SUM(cost) AS cost,
               SUM(IFNULL((SELECT SUM(c.amount) FROM UNNEST(credits) AS c), 0)) AS credits
        FROM `{export['table']}` WHERE DATE(usage_start_time) BETWEEN '{start}' AND '{end}'""")
    row = rows[0]
    return int(next(v for k, v in row.items() if k not in ("cost", "credits"))), row["cost"], row["credits"]


def _dest_totals(services, org, start: str, end: str) -> tuple[int, float, float]:
    rows = query(services.bigquery, f"""
        SELECT COUNT(*) AS n, SUM(cost) AS cost, SUM(credits_total) AS credits
        FROM `{services.bigquery.project}.{services.org_dataset(org)}.gcp_billing_daily_raw`
        WHERE usage_date BETWEEN '{start}' AND '{end}'""")
    row = rows[0]
    count = int(next(v for k, v in row.items() if k not in ("cost", "credits")))
    return count, row["cost"] or 0.0, row["credits"] or 0.0


def _same(a: tuple[int, float, float], b: tuple[int, float, float]) -> bool:
    return a[0] == b[0] and math.isclose(a[1], b[1], abs_tol=1e-6) and math.isclose(a[2], b[2], abs_tol=1e-6)


async def test_billing_copy_reads_with_the_customers_client_and_a_rerun_leaves_one_copy(gcp, customer_export):
    server, services_for = gcp
    org = new_org("gcp")
    key = server.service_account_key(CUSTOMER_PROJECT, name=f"billing-{org}")
    services = services_for(org, key)
    parameters = {"date": "2025-06-01", "billing_export_dataset": customer_export["dataset"],
                  "billing_export_table": EXPORT_TABLE}

    result, _ = await run("gcp/cost/billing", services, org, parameters=parameters)
    assert result.status is RunStatus.SUCCESS, result.error
    step = result.steps[0].result
    assert step["source_table"] == customer_export["table"]  # the customer's project ...
    assert step["destination_table"] == f"{services.org_dataset(org)}.gcp_billing_daily_raw"  # ... into the org's
    assert step["dual_client"] is True and step["service_account"] == key["client_email"]
    assert server.token_requests >= 1  # the source client authenticated as the customer's service account
    assert step["write_method"] == "staged_merge"  # one atomic MERGE
    source = _source_totals(customer_export, "2025-06-01", "2025-06-01")
    assert source[0] == 41 and _same(_dest_totals(services, org, "2025-06-01", "2025-06-01"), source)
    assert _dest_totals(services, org, "2025-05-31", "2025-05-31")[0] == 0  # only the asked day

    rows = table_rows(services, org, "gcp_billing_daily_raw", order_by="usage_start_time, cost")
    crossover = [r for r in rows if r["invoice_month"] == "202505"]
    assert len(crossover) == 1 and crossover[0]["cost"] == 7.5
    sample = next(r for r in rows if r["credits_total"] < 0)
    assert sample["org_slug"] == org and sample["service_id"] and sample["project_id"] == "acme-web-prod"
    assert math.isclose(sample["net_cost"], sample["cost"] + sample["credits_total"])
    assert json.loads(sample["labels"])[0]["key"] == "team" and json.loads(sample["credits"])[0]["amount"] == -0.25

    again, _ = await run("gcp/cost/billing", services, org, parameters=parameters)
    assert again.status is RunStatus.SUCCESS, again.error
    assert _same(_dest_totals(services, org, "2025-06-01", "2025-06-01"), source)  # one copy, not two


async def test_late_rows_restate_the_days_of_the_lookback_window(gcp, customer_export):
    server, services_for = gcp
    org = new_org("gcp")
    services = services_for(org, server.service_account_key(CUSTOMER_PROJECT, name=f"billing-{org}"))
    window = {"start_date": "2025-05-31", "end_date": "2025-06-02",
              "billing_export_dataset": customer_export["dataset"], "billing_export_table": EXPORT_TABLE}

    first, _ = await run("gcp/cost/billing", services, org, parameters=window)
    assert first.status is RunStatus.SUCCESS, first.error
    assert first.steps[0].rows_processed == 121

    # Two days later Google restates May 31: a late row and a credit, exported on June 2.
    customer_export["insert"]([
        billing_export_row("2025-05-31", 200, cost=3.0, export_time="2025-06-02T08:00:00Z"),
        billing_export_row("2025-05-31", 201, cost=0.0, credit=-1.5, export_time="2025-06-02T08:00:00Z",
                           cost_type="adjustment"),
    ])
    second, _ = await run("gcp/cost/billing", services, org, parameters=window)
    assert second.status is RunStatus.SUCCESS, second.error
    assert second.steps[0].rows_processed == 123
    for day in ("2025-05-31", "2025-06-01", "2025-06-02"):
        assert _same(_dest_totals(services, org, day, day), _source_totals(customer_export, day, day)), day


async def test_a_failing_copy_changes_nothing(gcp, customer_export):
    server, services_for = gcp
    org = new_org("gcp")
    services = services_for(org, server.service_account_key(CUSTOMER_PROJECT, name=f"billing-{org}"))
    good = {"date": "2025-06-02", "billing_export_dataset": customer_export["dataset"],
            "billing_export_table": EXPORT_TABLE}
    assert (await run("gcp/cost/billing", services, org, parameters=good))[0].status is RunStatus.SUCCESS
    before = _dest_totals(services, org, "2025-06-02", "2025-06-02")

    missing = {**good, "billing_export_table": "gcp_billing_export_v1_NOPE"}
    result, _ = await run("gcp/cost/billing", services, org, parameters=missing)
    assert result.status is RunStatus.FAILED and result.steps[0].error.code == "GOOGLE_API_NOT_FOUND"
    hostile = {**good, "billing_export_dataset": "x` WHERE 1=1; DROP TABLE y; --"}
    result, _ = await run("gcp/cost/billing", services, org, parameters=hostile)
    assert result.status is RunStatus.FAILED and result.steps[0].error.code == "CONFIG_INVALID"
    assert _dest_totals(services, org, "2025-06-02", "2025-06-02") == before


async def test_the_service_account_key_comes_from_org_integration_credentials_via_kms(gcp, local_stack, tmp_path):
    """The real credential store: the key is stored KMS-encrypted (local keyring) in the central table and
    decrypted by the extractor (resolution step 2), then masked in everything the run reports."""
    import uuid

    from convergence.runtime.services import Services
    from convergence.warehouse.bootstrap import bootstrap

    server, _ = gcp
    settings = make_settings(local_stack, gcp_api_url_template=server.base_url,
                             central_dataset=f"organizations_{uuid.uuid4().hex[:8]}",
                             local_keyring_path=tmp_path / "keyring.key")
    services = Services(settings)
    try:
        assert bootstrap(services.bigquery, settings).ok
        org = new_org("gcp")
        key = server.service_account_key(CUSTOMER_PROJECT, name=f"stored-{org}")
        services.credentials.put(org, "GCP_SA", json.dumps(key))
        result, context = await run("gcp/api/billing_accounts", services, org)
        assert result.status is RunStatus.SUCCESS, result.error
        assert result.steps[0].result["credential_source"] == "org_integration_credentials"
        assert json.loads(context.secrets["gcp_sa"])["client_email"] == key["client_email"]  # masked from now on
        assert key["private_key"] not in result.model_dump_json()
    finally:
        await services.aclose()
