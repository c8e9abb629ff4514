"""The one run-date parser (processors._dates.run_dates): sources, named dates, defaults and the cap."""

from __future__ import annotations

from datetime import date

import pytest

from convergence.pipeline.errors import PermanentStepError
from convergence.processors._dates import MAX_RANGE_DAYS, run_dates
from convergence.processors._llm.params import date_range

TODAY = date(2026, 3, 10)


def span(config=None, params=None, **options):
    result = run_dates(config or {}, params or {}, today=TODAY, **options)
    return result.start.isoformat(), result.end.isoformat()


@pytest.mark.parametrize("config,params,expected", [
    ({}, {}, ("2026-03-09", "2026-03-09")),
    ({"lookback_days": 3}, {}, ("2026-03-07", "2026-03-09")),
    ({"default": "current_month"}, {}, ("2026-03-01", "2026-03-31")),
    ({"start_date": "month_start", "end_date": "yesterday"}, {}, ("2026-03-01", "2026-03-09")),
    ({}, {"start_date": "today", "end_date": "month_end"}, ("2026-03-10", "2026-03-31")),
    ({"date": "2026-03-04"}, {"date": "2026-03-05"}, ("2026-03-04", "2026-03-04")),
    ({}, {"start_date": "2026-03-01"}, ("2026-03-01", "2026-03-01")),
])
def test_sources_and_named_dates(config, params, expected):
    assert span(config, params) == expected


def test_open_end_and_future_as_the_llm_pipelines_use_them():
    assert span({}, {"start_date": "2026-03-01"}, open_end="yesterday") == ("2026-03-01", "2026-03-09")
    assert span({}, {"end_date": "2026-03-12"}) == ("2026-03-12", "2026-03-12")
    with pytest.raises(PermanentStepError, match="in the future"):
        span({}, {"end_date": "2026-03-12"}, allow_future=False)
    # The LLM preset is the same parser, named dates included.
    assert date_range({}, {"start_date": "month_start"}, today=TODAY).end == date(2026, 3, 9)


@pytest.mark.parametrize("config,params,fragment", [
    ({}, {"start_date": "2025-03-09", "end_date": "2026-03-10"}, "367 days; this pipeline allows at most 366"),
    ({"max_range_days": 400}, {}, f"must be between 1 and {MAX_RANGE_DAYS}"),
    ({"max_range_days": 62}, {"start_date": "2026-01-01", "end_date": "2026-03-09"}, "at most 62"),
    ({"lookback_days": 0}, {}, "lookback_days 0"),
    ({"default": "last_week"}, {}, "not one of yesterday, current_month"),
    ({}, {"start_date": "next_month"}, "not an ISO date"),
])
def test_bad_ranges_are_invalid_parameters(config, params, fragment):
    with pytest.raises(PermanentStepError) as caught:
        span(config, params)
    assert caught.value.code == "INVALID_PARAMETERS" and fragment in str(caught.value)


def test_the_cap_allows_a_leap_year():
    assert MAX_RANGE_DAYS == 366
    assert span({}, {"start_date": "2024-01-01", "end_date": "2024-12-31"}) == ("2024-01-01", "2024-12-31")
