"""The FinOps Foundation's own validator (`focus-validator`, FOCUS 1.2 rules as shipped in the package) on the
four-source fixture month, exported to Parquet. Every failing rule fails the test, except the validator's
known faults (KNOWN_BAD_RULES, each with its reason).

The validator pins numpy<2 and duckdb<2, which clash with the project's venv, and needs Python 3.12+: it
gets its own venv (.state/focus-validator-venv, made on first use). Where no Python 3.12+ is found, the test
is skipped and says so."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.llm import DictCredentials, LlmTestServices, make_settings, new_org, repo_path
from tests.unit.processors.focus.test_focus import focus_rows
from tests.unit.processors.focus.test_focus_saas import map_four_sources

pytestmark = [pytest.mark.emulator]

VALIDATOR = "focus-validator==2.2.1"
# Its pyarrow pin is open-ended, but version 2.2.1 cannot import pyarrow 26.
VALIDATOR_PINS = ("pyarrow<26",)
VENV = repo_path(".state/focus-validator-venv")
FOCUS_VERSION = "1.2"

# Rules of the validator's bundled 1.2 rule file that are wrong there, not in our data. Every other failing
# rule fails the test.
KNOWN_BAD_RULES = {
    "InvoiceId-C-005-C": "one branch of an OR (InvoiceId-C-004/005) reported on its own; its parent rule, which "
                         "is FOCUS 1.2's requirement, passes",
    "CapacityReservationStatus-C-004-C": "malformed condition in the rule file: it fails on tables without any "
                                         "capacity reservation",
    "CommitmentDiscountStatus-C-004-C": "inverted condition in the rule file: it requires a status on rows "
                                        "that have no commitment discount",
}

# Every capability the service has (--show-applicability-criteria lists them all): billing accounts have
# names (config or provider), zones and regions (GCP), more than one pricing category is not offered
# (Standard only), several sub-account types (Project, Workspace) and billing account types (Organization,
# Billing Account), usage is measured, unit prices (SaaS seats) and public list prices (GCP cost_at_list),
# sub-accounts, resource types (SaaS subscriptions), tags (GCP labels).
REALISTIC_CRITERIA = (
    "ACCOUNT_NAMING_SUPPORTED", "AVAILABILITY_ZONE_SUPPORTED", "MULTIPLE_SUB_ACCOUNT_TYPES_SUPPORTED",
    "MULTIPLE_BILLING_ACCOUNT_TYPES_SUPPORTED", "PUBLIC_PRICE_LIST_SUPPORTED", "USAGE_MEASUREMENT_SUPPORTED",
    "UNIT_PRICING_SUPPORTED", "SUB_ACCOUNT_SUPPORTED", "RESOURCE_TYPE_ASSIGNMENT_SUPPORTED", "REGION_SUPPORTED",
    "TAGGING_SUPPORTED",
)


def _python_312() -> str | None:
    """A Python 3.12 or newer on this machine (not the project's venv, which may be older)."""
    candidates = [sys.executable, *(shutil.which(f"python3.{m}") for m in range(12, 20))]
    candidates += sorted(str(p) for p in Path("/usr/bin").glob("python3.1[2-9]"))
    candidates += sorted(str(p) for p in Path(os.path.expanduser("~/.pyenv/versions")).glob("3.1[2-9]*/bin/python3"))
    candidates += sorted(str(p) for p in Path("/root/.pyenv/versions").glob("3.1[2-9]*/bin/python3"))
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run([candidate, "-c", "import sys, venv; print(sys.version_info >= (3, 12))"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == "True":
            return candidate
    return None


def _validator_venv() -> Path:
    """The validator's own venv, made (once) with a Python 3.12+; skips the test when there is none."""
    binary = VENV / "bin" / "focus-validator"
    marker = VENV / ".installed"
    wanted = " ".join((VALIDATOR, *VALIDATOR_PINS))
    if binary.exists() and marker.exists() and marker.read_text() == wanted:
        return VENV
    python = _python_312()
    if python is None:
        pytest.skip("focus-validator needs Python 3.12 or newer, and none was found on this machine "
                    "(looked on PATH, /usr/bin and ~/.pyenv/versions)")
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=300)
    install = subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                              VALIDATOR, *VALIDATOR_PINS], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, f"pip install {wanted} failed:\n{install.stderr[-3000:]}"
    marker.write_text(wanted)
    return VENV


def _arrow_type(kind: str) -> pa.DataType:
    return {"STRING": pa.string(), "NUMERIC": pa.decimal128(38, 9), "BIGNUMERIC": pa.decimal128(38, 9),
            "TIMESTAMP": pa.timestamp("us", tz="UTC"), "DATE": pa.date32(), "INTEGER": pa.int64(),
            "INT64": pa.int64(), "FLOAT": pa.float64(), "FLOAT64": pa.float64(), "BOOLEAN": pa.bool_(),
            "BOOL": pa.bool_(), "JSON": pa.string()}[kind.upper()]


def export_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    """The FOCUS rows as Parquet, typed by the table's schema (CSV would read token counts back as integers)."""
    fields = json.loads(repo_path("configs/focus/schemas/focus_cost_daily.json").read_text())
    schema = pa.schema([pa.field(f["name"], _arrow_type(f["type"])) for f in fields])
    columns = {}
    for field in fields:
        values = [row.get(field["name"]) for row in rows]
        if field["type"].upper() in ("NUMERIC", "BIGNUMERIC"):
            values = [None if v is None else Decimal(v).quantize(Decimal("1e-9")) for v in values]
        columns[field["name"]] = values
    pq.write_table(pa.table(columns, schema=schema), path)


def run_validator(venv: Path, data: Path, workdir: Path, criteria: str) -> dict[str, str]:
    """rule id -> 'passed' / 'failed' / 'skipped', from the validator's unittest (JUnit XML) output."""
    # It opens its currency list as the relative path focus_validator/rules/currency_codes.csv.
    packaged = next((venv / "lib").glob("python3.*/site-packages/focus_validator/rules/currency_codes.csv"))
    (workdir / "focus_validator" / "rules").mkdir(parents=True, exist_ok=True)
    shutil.copy(packaged, workdir / "focus_validator" / "rules" / "currency_codes.csv")
    report = workdir / f"report-{uuid.uuid4().hex[:6]}.xml"
    command = [str(venv / "bin" / "focus-validator"), "--data-file", str(data), "--validate-version", FOCUS_VERSION,
               "--block-download", "--applicability-criteria", criteria, "--output-type", "unittest",
               "--output-destination", str(report)]
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert report.exists(), f"validator wrote no report (exit {done.returncode}):\n{done.stdout[-3000:]}\n" \
                            f"{done.stderr[-3000:]}"
    results: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        rule = re.split(r"\s", case.get("name", ""), maxsplit=1)[0].rstrip(":")
        if case.find("failure") is not None or case.find("error") is not None:
            results[rule] = "failed"
        elif case.find("skipped") is not None:
            results[rule] = "skipped"
        else:
            results[rule] = "passed"
    return results


def _children(requirement: Any) -> list[str]:
    """The rules a composite requirement is made of (CheckModelRule items, at any depth)."""
    if isinstance(requirement, dict):
        own = [requirement["ModelRuleId"]] if requirement.get("CheckFunction") == "CheckModelRule" else []
        return own + [c for item in requirement.get("Items", []) for c in _children(item)]
    return []


def unexpected_failures(results: dict[str, str], venv: Path) -> list[str]:
    """Failed rules, less the known-bad ones and the composites that fail only through them."""
    model_file = next((venv / "lib").glob("python3.*/site-packages/focus_validator/rules/model-1.2*.json"))
    rules = json.loads(model_file.read_text())["ModelRules"]
    failed = {rule for rule, state in results.items() if state == "failed"}
    excused = set(KNOWN_BAD_RULES)
    changed = True
    while changed:  # a composite is excused when each of its failed parts is
        changed = False
        for rule in failed - excused:
            criteria = rules.get(rule, {}).get("ValidationCriteria", {})
            parts = [c for c in _children(criteria.get("Requirement")) if c in failed]
            if rules.get(rule, {}).get("Function") == "Composite" and parts and set(parts) <= excused:
                excused.add(rule)
                changed = True
    return sorted(failed - excused)


@pytest.fixture
def bq(bq_client):
    return bq_client


@pytest.fixture
async def four_sources(bq):
    settings = make_settings(bq.project, central_dataset=f"organizations_{uuid.uuid4().hex[:8]}")
    org = new_org(bq, settings, "focus_validator")
    services = LlmTestServices(settings, bq, DictCredentials({}))
    await map_four_sources(services, org)
    yield focus_rows(bq, settings, org)
    await services.aclose()


@pytest.mark.parametrize("criteria", [",".join(REALISTIC_CRITERIA), "ALL"], ids=["realistic", "all"])
async def test_official_validator_passes_the_four_source_fixture(four_sources, tmp_path, criteria):
    venv = _validator_venv()
    assert {r["x_SourcePipeline"] for r in four_sources} == {"openai", "anthropic", "gcp", "saas"}
    data = tmp_path / "focus_cost_daily.parquet"
    export_parquet(four_sources, data)
    results = run_validator(venv, data, tmp_path, criteria)
    assert len(results) > 100, f"the validator ran only {len(results)} rule(s)"
    unexpected = unexpected_failures(results, venv)
    assert not unexpected, f"official FOCUS validator: {len(unexpected)} rule(s) failed: {unexpected}"
