"""Hostile names are refused before anything reaches BigQuery; Google errors map to transient/permanent."""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions as gexc

from convergence.pipeline.errors import PermanentStepError, TransientStepError
from convergence.settings.model import load_settings
from convergence.warehouse.errors import classify_google_error, to_step_error
from convergence.warehouse.identifiers import (
    InvalidIdentifier,
    table_ref,
    validate_column,
    validate_dataset,
    validate_org_slug,
    validate_table,
)
from convergence.warehouse.procedures import execute_procedure, render_literal
from convergence.warehouse.runlog import RunLog
from convergence.warehouse.writer import Writer
from tests.support.warehouse import ExplodingClient

HOSTILE = [
    "a'b", 'a"b', "a`b", "acme`; DROP TABLE x; --", "a..b", "a.b", "../etc", "a b", "a-b", "", "x" * 200,
    "acme\n", "ACME%", "acme/other", "\u00e9cole", "a\x00b",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_everywhere(name):
    for check in (validate_org_slug, validate_dataset, validate_table, validate_column):
        with pytest.raises(InvalidIdentifier):
            check(name)


def test_rules_and_messages():
    assert validate_org_slug("acme_corp_42") == "acme_corp_42"
    for bad in ("ab", "a" * 51, "Acme", "acme-corp"):
        with pytest.raises(InvalidIdentifier, match="3-50 characters"):
            validate_org_slug(bad)
    assert validate_table("openai_usage_daily_raw") == "openai_usage_daily_raw"
    with pytest.raises(InvalidIdentifier, match="table name"):
        validate_table("1table")
    with pytest.raises(InvalidIdentifier, match="reserves"):
        validate_column("_PARTITIONTIME")
    assert isinstance(InvalidIdentifier("x"), ValueError)
    assert table_ref("convergence-local", "acme_dev", "cost") == "`convergence-local.acme_dev.cost`"
    with pytest.raises(InvalidIdentifier):
        table_ref("convergence-local", "acme_dev", "cost`; SELECT 1; --")


@pytest.mark.parametrize("name", ["a'b", "t`x", "a..b", "x" * 200])
def test_writer_refuses_hostile_table_or_dataset_before_bigquery(name):
    writer = Writer(ExplodingClient(), load_settings())  # type: ignore[arg-type]
    for dataset, table in ((name, "cost"), ("acme_dev", name)):
        with pytest.raises(PermanentStepError) as caught:
            writer.write(dataset, table, [{"a": 1}])
        assert caught.value.code == "INVALID_IDENTIFIER"


@pytest.mark.parametrize("org", ["acme' OR '1'='1", "ACME", "x" * 200, "a`b", "a..b"])
def test_writer_and_runlog_refuse_hostile_org_before_bigquery(org):
    settings = load_settings()
    with pytest.raises(PermanentStepError, match="org slug"):
        Writer(ExplodingClient(), settings).write("acme_dev", "cost", [{"a": 1}], org_slug=org)  # type: ignore[arg-type]
    runlog = RunLog(ExplodingClient(), settings)  # type: ignore[arg-type]
    for query in (lambda: runlog.latest_run("run_1", org), lambda: runlog.step_logs("run_1", org),
                  lambda: runlog.list_runs(org_slug=org)):
        with pytest.raises(InvalidIdentifier):
            query()


def test_writer_refuses_another_orgs_dataset_before_bigquery():
    writer = Writer(ExplodingClient(), load_settings(environment="development"))  # type: ignore[arg-type]
    with pytest.raises(PermanentStepError) as caught:
        writer.write("beta_dev", "cost", [{"a": 1}], org_slug="acme")
    assert caught.value.code == "DATASET_NOT_OWNED"


@pytest.mark.parametrize("value", ["x'); DROP TABLE t; --", "a b", "a`b", float("nan"), object(), b"bytes"])
def test_procedure_arguments_that_could_carry_sql_are_refused(value):
    with pytest.raises(InvalidIdentifier):
        render_literal(value)
    with pytest.raises(InvalidIdentifier):
        execute_procedure(ExplodingClient(), "organizations", "sp_x", [value])  # type: ignore[arg-type]


def test_procedure_literals():
    from datetime import UTC, date, datetime
    from decimal import Decimal

    assert render_literal(date(2024, 1, 31)) == "DATE '2024-01-31'"
    assert render_literal(datetime(2024, 1, 31, tzinfo=UTC)) == "TIMESTAMP '2024-01-31T00:00:00+00:00'"
    assert render_literal(True) == "TRUE"
    assert render_literal(42) == "42"
    assert render_literal(None) == "NULL"
    assert render_literal(Decimal("1.50")) == "NUMERIC '1.50'"
    assert render_literal("acme_corp") == "'acme_corp'"


def _http_error(cls, message="boom", reason=None):
    errors = [{"reason": reason, "message": message}] if reason else []
    return cls(message, errors=errors)


@pytest.mark.parametrize(("error", "code", "retryable"), [
    (_http_error(gexc.ServiceUnavailable), "GOOGLE_API_UNAVAILABLE", True),
    (_http_error(gexc.InternalServerError), "GOOGLE_API_UNAVAILABLE", True),
    (_http_error(gexc.TooManyRequests), "GOOGLE_API_RATE_LIMITED", True),
    (_http_error(gexc.Forbidden, reason="rateLimitExceeded"), "GOOGLE_API_RATE_LIMITED", True),
    (_http_error(gexc.BadRequest, reason="backendError"), "GOOGLE_API_UNAVAILABLE", True),
    (_http_error(gexc.BadRequest, reason="invalidQuery"), "GOOGLE_API_INVALID_REQUEST", False),
    (_http_error(gexc.Forbidden, reason="accessDenied"), "GOOGLE_API_PERMISSION_DENIED", False),
    (_http_error(gexc.NotFound), "GOOGLE_API_NOT_FOUND", False),
    (_http_error(gexc.Conflict), "GOOGLE_API_CONFLICT", False),
    (gexc.RetryError("deadline", cause=gexc.ServiceUnavailable("down")), "GOOGLE_API_UNAVAILABLE", True),
    (requests.ConnectionError("refused"), "NETWORK_ERROR", True),
    (requests.Timeout("slow"), "NETWORK_ERROR", True),
])
def test_google_errors_are_classified(error, code, retryable):
    info = classify_google_error(error)
    assert info is not None and info.code == code and info.retryable is retryable
    step_error = to_step_error(error, "load into p.d.t")
    assert isinstance(step_error, TransientStepError if retryable else PermanentStepError)
    assert step_error.code == code and "load into p.d.t" in str(step_error)


def test_other_errors_are_left_to_the_default_classifier():
    assert classify_google_error(ValueError("x")) is None
    assert classify_google_error(TransientStepError("x")) is None
