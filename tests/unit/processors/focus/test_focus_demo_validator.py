"""The official FOCUS validator on the `make run` org's data: the demo's own build (convergence/devstack/demo.py)
for one org on the local stack — the provider stand-ins with the demo's seeded usage, the demo's LLM
pipelines, then its FOCUS pipelines — exported and validated like the four-source fixture
(tests/unit/processors/focus/test_focus_validator.py: same venv, same known validator faults). Skipped, with
the reason, where no Python 3.12+ is found."""

from __future__ import annotations

import uuid

import pytest

from convergence.devstack.demo import FOCUS_PIPELINES
from convergence.devstack.providers.demo import DEMO_PIPELINES, LlmStandIns, demo_parameters
from convergence.pipeline import RunStatus
from convergence.processors.focus.conformance import check, format_report
from tests.support.llm import DictCredentials, LlmTestServices, make_settings, new_org, run_pipeline
from tests.unit.processors.focus.test_focus import focus_rows
from tests.unit.processors.focus.test_focus_validator import (
    REALISTIC_CRITERIA,
    _validator_venv,
    export_parquet,
    run_validator,
    unexpected_failures,
)

pytestmark = [pytest.mark.emulator]


@pytest.fixture
def bq(bq_client):
    return bq_client


@pytest.fixture
async def demo_org_rows(bq):
    """The demo's FOCUS rows of one org: what `make run` builds, through the same pipelines and stand-ins."""
    async with LlmStandIns() as standins:
        settings = make_settings(bq.project, openai_url=standins.openai.base_url,
                                 anthropic_url=standins.anthropic.base_url,
                                 central_dataset=f"organizations_{uuid.uuid4().hex[:8]}")
        org = new_org(bq, settings, "focus_demo")
        credentials = DictCredentials({(org, provider): key for provider, key in standins.credentials.items()})
        services = LlmTestServices(settings, bq, credentials)
        try:
            params = demo_parameters()
            for pipeline in (*DEMO_PIPELINES, *FOCUS_PIPELINES):
                result, _, _ = await run_pipeline(pipeline, org, services, params)
                assert result.status is RunStatus.SUCCESS, (pipeline, result.error)
            report = check(bq, settings, org)
            assert report.ok, format_report(report)
            yield focus_rows(bq, settings, org)
        finally:
            await services.aclose()


@pytest.mark.parametrize("criteria", [",".join(REALISTIC_CRITERIA), "ALL"], ids=["realistic", "all"])
async def test_official_validator_passes_the_demo_org(demo_org_rows, tmp_path, criteria):
    venv = _validator_venv()
    rows = demo_org_rows
    assert {r["x_SourcePipeline"] for r in rows} == {"openai", "anthropic"}
    assert {r["x_CostBasis"] for r in rows} >= {"billed"} and len(rows) > 50, len(rows)
    # Sub-account names from the stand-ins' Admin API lists (projects, workspaces).
    assert {r["SubAccountName"] for r in rows if r["SubAccountId"]} == {"Stand-in Alpha", "Stand-in Beta"}
    data = tmp_path / "focus_cost_daily.parquet"
    export_parquet(rows, data)
    results = run_validator(venv, data, tmp_path, criteria)
    assert len(results) > 100, f"the validator ran only {len(results)} rule(s)"
    unexpected = unexpected_failures(results, venv)
    assert not unexpected, f"official FOCUS validator on the demo org: {len(unexpected)} rule(s) failed: {unexpected}"
