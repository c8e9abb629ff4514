"""Run parameters of the LLM pipelines: the date range (start_date/end_date, default yesterday UTC) and
step config helpers. Every bad value is a PermanentStepError with code INVALID_PARAMETERS."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

from convergence.pipeline import errors
from convergence.pipeline.errors import ErrorCode
from convergence.processors._dates import DateRange, utc_today

DEFAULT_MAX_RANGE_DAYS = 93
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MONTH = re.compile(r"^\d{4}-\d{2}$")


# The name processors/focus imports (its codes are INVALID_PARAMETERS): pipeline.errors.invalid with the code.
invalid = partial(errors.invalid, code=ErrorCode.INVALID_PARAMETERS)


def _parse_date(name: str, value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    if not _ISO_DATE.match(text):
        raise invalid(f"{name} {value!r} is not an ISO date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise invalid(f"{name} {value!r} is not a valid calendar date") from None


def _given(value: Any) -> bool:
    return value is not None and value != ""


def date_range(config: Mapping[str, Any], parameters: Mapping[str, Any], *, today: date | None = None) -> DateRange:
    """The run's dates: step config (`start_date`/`end_date`, e.g. from an upstream step's output) first,
    then the run parameters (`start_date`/`end_date`, or `date` for one day), else yesterday (UTC).

    Checked: ISO dates, start <= end, end not in the future, at most `max_range_days` days (step config)."""
    today = today or utc_today()
    yesterday = today - timedelta(days=1)
    raw_start = config.get("start_date") if _given(config.get("start_date")) else parameters.get("start_date")
    raw_end = config.get("end_date") if _given(config.get("end_date")) else parameters.get("end_date")
    if not _given(raw_start) and not _given(raw_end) and _given(parameters.get("date")):
        raw_start = raw_end = parameters["date"]
    start = _parse_date("start_date", raw_start) if _given(raw_start) else None
    end = _parse_date("end_date", raw_end) if _given(raw_end) else None
    if start is None and end is None:
        start = end = yesterday
    elif start is None:
        start = end
    elif end is None:
        end = max(start, yesterday) if start <= today else start
    assert start is not None and end is not None
    if start > end:
        raise invalid(f"start_date {start} is after end_date {end}")
    if end > today:
        raise invalid(f"end_date {end} is in the future (today is {today} UTC)")
    limit = config.get("max_range_days", DEFAULT_MAX_RANGE_DAYS)
    try:
        limit = int(limit)
    except (TypeError, ValueError):
        raise invalid(f"max_range_days {limit!r} in the step config is not a whole number") from None
    result = DateRange(start, end)
    if result.days > limit:
        raise invalid(
            f"date range {start}..{end} is {result.days} days; this pipeline allows at most {limit} "
            f"(max_range_days): split the run into smaller ranges"
        )
    return result


def month_range(config: Mapping[str, Any], parameters: Mapping[str, Any], *, today: date | None = None) -> DateRange:
    """A calendar month: `month` (YYYY-MM), or the month of `start_date`/`date`, else the current month (UTC)."""
    today = today or utc_today()
    raw = config.get("month") if _given(config.get("month")) else parameters.get("month")
    if _given(raw):
        text = str(raw).strip()
        if not _MONTH.match(text):
            raise invalid(f"month {raw!r} is not YYYY-MM")
        try:
            first = date.fromisoformat(f"{text}-01")
        except ValueError:
            raise invalid(f"month {raw!r} is not a valid month") from None
    else:
        other = parameters.get("start_date") or parameters.get("date")
        first = (_parse_date("start_date", other) if _given(other) else today).replace(day=1)
    if first > today:
        raise invalid(f"month {first:%Y-%m} is in the future")
    last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    return DateRange(first, last)


def int_setting(config: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = config.get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid(f"{name} {value!r} in the step config is not a whole number") from None
    if not low <= number <= high:
        raise invalid(f"{name} {number} in the step config must be between {low} and {high}")
    return number


def choice(config: Mapping[str, Any], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = str(config.get(name, default))
    if value not in allowed:
        raise invalid(f"{name} {value!r} in the step config must be one of {', '.join(allowed)}")
    return value


def string_list(config: Mapping[str, Any], name: str, default: list[str], allowed: tuple[str, ...]) -> list[str]:
    value = config.get(name, default)
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(f"{name} in the step config must be a list of strings")
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise invalid(f"{name} {unknown} not supported; allowed: {', '.join(allowed)}")
    return list(dict.fromkeys(value))


def plain_list(config: Mapping[str, Any], name: str) -> list[str]:
    value = config.get(name) or []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise invalid(f"{name} in the step config must be a list of strings")
    return value
