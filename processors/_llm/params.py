"""Run parameters of the LLM pipelines: the date range (processors._dates, default yesterday UTC), the
month, and step config helpers. Every bad value is a PermanentStepError with code INVALID_PARAMETERS.

`lookback_days` (step config, else run parameter; the schedules pass 3) widens the range to at least
the N days ending end_date: providers publish cost a day or more late and restate it, so every
scheduled run re-pulls the trailing days and its range replace keeps one copy of each day."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, timedelta
from functools import partial
from typing import Any

from convergence.pipeline import errors
from convergence.pipeline.errors import ErrorCode
from convergence.processors._dates import MAX_RANGE_DAYS, DateRange, parse_date, run_dates, utc_today

_MONTH = re.compile(r"^\d{4}-\d{2}$")


# The name processors/focus imports (its codes are INVALID_PARAMETERS): pipeline.errors.invalid with the code.
invalid = partial(errors.invalid, code=ErrorCode.INVALID_PARAMETERS)


def _given(value: Any) -> bool:
    return value is not None and value != ""


def date_range(config: Mapping[str, Any], parameters: Mapping[str, Any], *, today: date | None = None) -> DateRange:
    """The run's dates (processors._dates.run_dates): a start without an end runs until yesterday, and
    an end in the future is refused (provider reports have nothing after today). With `lookback_days`
    N, the range starts at least N-1 days before its end (the widened range obeys max_range_days too)."""
    dates = run_dates(config, parameters, open_end="yesterday", allow_future=False, today=today)
    days = lookback_days(config, parameters)
    start = dates.end - timedelta(days=days - 1)
    if start >= dates.start:
        return dates
    widened = {**config, "start_date": start.isoformat(), "end_date": dates.end.isoformat()}
    return run_dates(widened, parameters, open_end="yesterday", allow_future=False, today=today)


def lookback_days(config: Mapping[str, Any], parameters: Mapping[str, Any]) -> int:
    """`lookback_days` of the step config, else of the run parameters; 1 (no widening) without either."""
    raw = config.get("lookback_days") if _given(config.get("lookback_days")) else parameters.get("lookback_days")
    if not _given(raw):
        return 1
    try:
        number = int(str(raw).strip())
    except ValueError:
        raise invalid(f"lookback_days {raw!r} is not a whole number") from None
    if not 1 <= number <= MAX_RANGE_DAYS:
        raise invalid(f"lookback_days {number} must be between 1 and {MAX_RANGE_DAYS}")
    return number


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
        first = (parse_date("start_date", other, today) if _given(other) else today).replace(day=1)
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
