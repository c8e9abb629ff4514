"""GCP billing account names from the Cloud Billing API, on the emulator and the GCP stand-in: each distinct
account id of the org's export rows is looked up once per run (`GET /v1/billingAccounts/{id}`) with the org's
own service-account key (token from the key's token_uri), its displayName reaches BillingAccountName; an
account the API refuses (403) or does not know (404) gets its configured name, else its id; a refused key or
an unreachable API falls back the same way without failing the mapping, and no key or token appears in the
results."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import pytest

from convergence.devstack.providers.gcp_server import GcpStandIn, account_resource, make_service_account_key
from convergence.pipeline import Executor, PipelineLoader, ProcessorRegistry, RunContext, RunStatus
from convergence.processors.focus.conformance import check, format_report
from tests.support.llm import CONFIGS, DictCredentials, LlmTestServices, RecordingObserver, make_settings, new_org
from tests.unit.processors.focus.test_focus import GCP_SCHEMA, focus_rows, gcp_row, write

pytestmark = [pytest.mark.emulator]

PARAMS = {"start_date": "2026-03-02", "end_date": "2026-03-03"}
NAMED = "01ABCD-EF2345-678901"      # the API names it
RESOLD = "0A1B2C-3D4E5F-6A7B8C"     # a subaccount, named by the API
DENIED = "012345-567890-ABCDEF"     # the org's service account is not a viewer: 403
UNKNOWN = "FFFFFF-000000-111111"    # no such account: 404


@pytest.fixture
def bq(bq_client):
    return bq_client


@pytest.fixture
async def gcp():
    server = GcpStandIn(accounts={
        NAMED: account_resource(NAMED, "Acme Production (API)"),
        RESOLD: account_resource(RESOLD, "Acme Resold (API)", master="billingAccounts/000000-000000-000000"),
        DENIED: account_resource(DENIED, "never shown"),
    })
    await server.start()
    yield server
    await server.stop()


def seed(services: Any, org: str) -> None:
    rows = [{**gcp_row(f"{day}T{hour:02d}:00:00+00:00", "Compute Engine", "N2 Instance Core", 1.5, invoice="202603"),
             "billing_account_id": account}
            for account in (NAMED, RESOLD, DENIED, UNKNOWN) for day in PARAMS.values() for hour in (10, 11)]
    # A row without an account id gets the org slug, which is not a billing account id: never looked up.
    rows.append({**gcp_row("2026-03-02T12:00:00+00:00", "Cloud Storage", "Standard Storage", 0.5,
                           invoice="202603"), "billing_account_id": None})
    write(services, org, "gcp_billing_daily_raw", GCP_SCHEMA, rows)


async def run_gcp(org: str, services: Any, extra: dict[str, Any]) -> tuple[Any, RecordingObserver]:
    config = PipelineLoader(CONFIGS).load("focus/cost/gcp")
    step = config.steps[0]
    config = config.model_copy(update={"steps": [step.model_copy(update={"config": {**step.config, **extra}})]})
    context = RunContext(org_slug=org, run_id=f"run_{uuid.uuid4().hex[:12]}", pipeline_id=config.pipeline_id,
                         parameters=dict(PARAMS), services=services)
    observer = RecordingObserver()
    result = await Executor(ProcessorRegistry(), observer=observer).run(config, context)
    assert result.status is RunStatus.SUCCESS, result.error
    return result.steps[0], observer


def account_names(bq, settings, org: str) -> dict[str, str]:
    return {r["BillingAccountId"]: r["BillingAccountName"] for r in focus_rows(bq, settings, org)
            if r["x_SourcePipeline"] == "gcp"}


CONFIGURED = {"billing_account_names": {NAMED: "Acme Production (config)", DENIED: "Acme Denied (config)"}}


async def test_cloud_billing_names_then_configuration_then_the_id(bq, gcp):
    settings = make_settings(bq.project, gcp_api_url_template=gcp.base_url)
    org, other = new_org(bq, settings, "focus_gcpn"), new_org(bq, settings, "focus_gcpn")
    key = gcp.service_account_key("acme-billing", name=f"reader-{org}")
    other_key = gcp.service_account_key("other-billing", name=f"reader-{other}")
    # Only the first org's service account may view NAMED; neither may view DENIED.
    gcp.account_viewers = {NAMED: {key["client_email"]}, DENIED: {"someone-else@x.iam.gserviceaccount.com"}}
    services = LlmTestServices(settings, bq, DictCredentials({(org, "GCP_SA"): json.dumps(key),
                                                               (other, "GCP_SA"): json.dumps(other_key)}))
    try:
        for slug in (org, other):
            seed(services, slug)

        step, observer = await run_gcp(org, services, CONFIGURED)
        assert step.result["billing_account_names_from"] == "Cloud Billing API (2 of 4 named)"
        assert step.result["billing_account_lookup_failures"] == (
            f"{DENIED}: HTTP 403 (PROVIDER_AUTH_FAILED); {UNKNOWN}: HTTP 404 (PROVIDER_REQUEST_REJECTED)")
        assert account_names(bq, settings, org) == {
            NAMED: "Acme Production (API)",   # the API over configuration
            RESOLD: "Acme Resold (API)",       # the API, nothing configured
            DENIED: "Acme Denied (config)",    # 403: configuration
            UNKNOWN: UNKNOWN,                  # 404, not configured: the id
            org: org,                          # no account id on the row: the org slug, not looked up
        }
        # One call per distinct account (8 rows each), all with the org's own service account.
        gets = [(g.account_id, g.client_email, g.status) for g in gcp.account_gets]
        assert sorted(gets) == sorted([(NAMED, key["client_email"], 200), (RESOLD, key["client_email"], 200),
                                       (DENIED, key["client_email"], 403), (UNKNOWN, key["client_email"], 404)])
        dump = observer.dump()
        assert key["private_key_id"] not in dump and "PRIVATE KEY" not in dump and "ya29." not in dump
        report = check(bq, settings, org)
        assert report.ok, format_report(report)

        # The other org's key is not a viewer of NAMED: its run gets a 403 there and the configured name.
        gcp.account_gets.clear()
        step, _ = await run_gcp(other, services, CONFIGURED)
        assert step.result["billing_account_names_from"] == "Cloud Billing API (1 of 4 named)"
        assert account_names(bq, settings, other)[NAMED] == "Acme Production (config)"
        assert {g.client_email for g in gcp.account_gets} == {other_key["client_email"]}
        assert (NAMED, 403) in {(g.account_id, g.status) for g in gcp.account_gets}

        # names_from_provider: false asks nobody.
        gcp.account_gets.clear()
        step, _ = await run_gcp(org, services, {**CONFIGURED, "names_from_provider": False})
        assert step.result["billing_account_names_from"] == "configuration" and gcp.account_gets == []
        assert account_names(bq, settings, org)[NAMED] == "Acme Production (config)"
    finally:
        await services.aclose()


async def test_refused_key_unreachable_api_or_no_credential_fall_back_to_configuration(bq, gcp):
    settings = make_settings(bq.project, gcp_api_url_template=gcp.base_url)
    org = new_org(bq, settings, "focus_gcpn")
    # A key whose token_uri is the stand-in but that the stand-in never registered: the token is refused.
    stranger = make_service_account_key("acme-billing", gcp.token_uri, name=f"stranger-{org}")
    services = LlmTestServices(settings, bq, DictCredentials({(org, "GCP_SA"): json.dumps(stranger)}))
    try:
        seed(services, org)
        step, observer = await run_gcp(org, services, CONFIGURED)
        assert step.result["billing_account_names_from"] == "configuration (PROVIDER_AUTH_FAILED)"
        assert gcp.account_gets == []
        assert account_names(bq, settings, org) == {NAMED: "Acme Production (config)", RESOLD: RESOLD,
                                                    DENIED: "Acme Denied (config)", UNKNOWN: UNKNOWN, org: org}
        assert stranger["private_key_id"] not in observer.dump() and "PRIVATE KEY" not in observer.dump()

        # No GCP_SA credential at all.
        del services.credentials.secrets[(org, "GCP_SA")]
        step, _ = await run_gcp(org, services, CONFIGURED)
        assert step.result["billing_account_names_from"] == "configuration (CREDENTIAL_NOT_FOUND)"
    finally:
        await services.aclose()

    # A registered key, but the API is unreachable: the first failure ends the lookups, the rest are skipped.
    key = gcp.service_account_key("acme-billing", name=f"reader2-{org}")
    settings = make_settings(bq.project, gcp_api_url_template="http://127.0.0.1:9")
    services = LlmTestServices(settings, bq, DictCredentials({(org, "GCP_SA"): json.dumps(key)}))
    try:
        step, _ = await run_gcp(org, services, {**CONFIGURED, "retry": {"attempts": 1}})
        assert step.result["billing_account_names_from"] == "Cloud Billing API (0 of 4 named)"
        failures = step.result["billing_account_lookup_failures"].split("; ")
        assert failures[0] == f"{DENIED}: PROVIDER_NETWORK_ERROR"  # looked up in id order: DENIED is first
        assert all("not looked up (PROVIDER_NETWORK_ERROR)" in f for f in failures[1:]) and len(failures) == 4
        assert account_names(bq, settings, org)[NAMED] == "Acme Production (config)"
    finally:
        await services.aclose()


async def test_stand_in_serves_billing_accounts_get_in_the_wire_format(gcp):
    key = gcp.service_account_key("acme-billing", name="reader-wire")
    not_viewer = gcp.service_account_key("acme-billing", name="not-a-viewer")
    gcp.account_viewers = {NAMED: {key["client_email"]}}

    async def token_for(info: dict[str, Any]) -> str:
        from google.auth.transport.requests import Request
        from google.oauth2 import service_account

        credentials = service_account.Credentials.from_service_account_info(
            info, scopes=["https://www.googleapis.com/auth/cloud-billing.readonly"])
        await asyncio.to_thread(credentials.refresh, Request())
        return credentials.token

    good, other = await token_for(key), await token_for(not_viewer)
    async with aiohttp.ClientSession() as http:
        async def get(account: str, token: str) -> tuple[int, Any]:
            async with http.get(f"{gcp.base_url}/v1/billingAccounts/{account}",
                                headers={"Authorization": f"Bearer {token}"}) as response:
                return response.status, await response.json()

        status, body = await get(NAMED, good)
        assert status == 200 and body == {"name": f"billingAccounts/{NAMED}", "open": True,
                                          "displayName": "Acme Production (API)", "masterBillingAccount": "",
                                          "parent": "organizations/123456789", "currencyCode": "USD"}
        status, body = await get(NAMED, other)
        assert status == 403 and body["error"] == {"code": 403, "message": "The caller does not have permission",
                                                   "status": "PERMISSION_DENIED"}
        status, body = await get(UNKNOWN, good)
        assert status == 404 and body["error"]["status"] == "NOT_FOUND"
        status, body = await get("not-an-id", good)
        assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
        status, body = await get(NAMED, "ya29.made-up-token")
        assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
    assert [(g.account_id, g.status) for g in gcp.account_gets] == [
        (NAMED, 200), (NAMED, 403), (UNKNOWN, 404), ("not-an-id", 400), (NAMED, 401)]
    assert gcp.account_gets[-1].client_email is None
