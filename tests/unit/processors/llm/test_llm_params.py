"""Date-range parameters, money parsing, model names and line items of the LLM processors (no I/O)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from convergence.pipeline.errors import PermanentStepError
from convergence.processors._llm.params import date_range, month_range
from convergence.processors._llm.values import BadValue, model_base, numeric_text, to_decimal, usd_text
from convergence.processors.openai.cost_extract import parse_line_item

TODAY = date(2026, 3, 10)


def dates(config=None, **params):
    return date_range(config or {}, params, today=TODAY)


def test_default_is_yesterday_utc():
    assert (dates().start, dates().end) == (date(2026, 3, 9), date(2026, 3, 9))


@pytest.mark.parametrize("config,params,expected", [
    ({}, {"start_date": "2026-03-01", "end_date": "2026-03-05"}, ("2026-03-01", "2026-03-05")),
    ({}, {"date": "2026-03-04"}, ("2026-03-04", "2026-03-04")),
    ({}, {"start_date": "2026-03-01"}, ("2026-03-01", "2026-03-09")),  # until yesterday
    ({}, {"end_date": "2026-03-03"}, ("2026-03-03", "2026-03-03")),
    ({}, {"start_date": "2026-03-10"}, ("2026-03-10", "2026-03-10")),  # today: a partial day is allowed
    ({"start_date": "2026-03-02", "end_date": "2026-03-02"}, {"start_date": "2026-01-01"},
     ("2026-03-02", "2026-03-02")),
])
def test_ranges(config, params, expected):
    result = dates(config, **params)
    assert (result.start.isoformat(), result.end.isoformat()) == expected


@pytest.mark.parametrize("config,params,fragment", [
    ({}, {"start_date": "2026-03-05", "end_date": "2026-03-01"}, "is after end_date"),
    ({}, {"start_date": "03/01/2026"}, "not an ISO date"),
    ({}, {"start_date": "2026-02-30"}, "not a valid calendar date"),
    ({}, {"end_date": "2026-03-11"}, "in the future"),
    ({"max_range_days": 7}, {"start_date": "2026-03-01", "end_date": "2026-03-08"},
     "8 days; this pipeline allows at most 7"),
    ({"max_range_days": "x"}, {}, "not a whole number"),
])
def test_invalid_ranges_are_permanent_invalid_parameters(config, params, fragment):
    with pytest.raises(PermanentStepError) as caught:
        dates(config, **params)
    assert caught.value.code == "INVALID_PARAMETERS" and fragment in str(caught.value)
    assert not caught.value.retryable


def test_month_range():
    march = month_range({}, {"month": "2026-02"}, today=TODAY)
    assert (march.start, march.end) == (date(2026, 2, 1), date(2026, 2, 28))
    assert month_range({}, {}, today=TODAY).start == date(2026, 3, 1)
    with pytest.raises(PermanentStepError, match="YYYY-MM"):
        month_range({}, {"month": "2026-2"}, today=TODAY)
    with pytest.raises(PermanentStepError, match="future"):
        month_range({}, {"month": "2026-04"}, today=TODAY)


@pytest.mark.parametrize("value,expected", [
    (0.0000045, "0.0000045"), ("0.000004500000000000000000000000000000000", "0.0000045"), ("0E-6176", "0"),
    (12, "12"), ("123.78912", "123.78912"), (1e-9, "1E-9"),
])
def test_amounts_parse_as_exact_decimals(value, expected):
    assert to_decimal(value, "amount") == Decimal(expected)


@pytest.mark.parametrize("value", [None, True, "abc", "NaN", "Infinity", [1]])
def test_bad_amounts(value):
    with pytest.raises(BadValue):
        to_decimal(value, "amount")


def test_money_text():
    assert numeric_text(Decimal("0.000004500000000000000000000000000000000")) == "0.000004500"
    assert numeric_text(Decimal("0E-6176")) == "0"
    assert usd_text(Decimal("2.005")) == "2.01" and usd_text(Decimal("-0.405")) == "-0.41"


@pytest.mark.parametrize("model,base", [
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"), ("gpt-4o", "gpt-4o"), ("o3-2025-04-16", "o3"),
    ("claude-sonnet-4-20250514", "claude-sonnet-4"), ("claude-opus-4-6", "claude-opus-4-6"),
    ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "ft:gpt-4o-mini-2024-07-18:acme::abc123"), (None, None),
])
def test_model_base(model, base):
    assert model_base(model) == base


@pytest.mark.parametrize("line_item,expected", [
    ("gpt-4o-mini-2024-07-18, input", ("gpt-4o-mini-2024-07-18", "input")),
    ("gpt-4o-mini-2024-07-18, cached input", ("gpt-4o-mini-2024-07-18", "cached input")),
    ("gpt-audio-mini-2025-12-15 text, output", ("gpt-audio-mini-2025-12-15", "output")),
    ("whisper-1", ("whisper-1", "other")),
    (None, (None, None)),
])
def test_line_items(line_item, expected):
    assert parse_line_item(line_item) == expected
