"""Run dates for every processor (not a ps_type: the underscore keeps it out of the registry).

`run_dates` is the one parser of a run's date range. Where the dates come from, first found wins:
the step config's `start_date`/`end_date`, the run parameters' `start_date`/`end_date`, then `date`
(step config, then run parameters) for one day. Each is an ISO date (YYYY-MM-DD) or a named date:
`today`, `yesterday`, `month_start`, `month_end` (UTC). Without any, `default` decides: `yesterday`
(the `lookback_days` days ending yesterday) or `current_month` (first to last day of this month).

The cap: a range is at most MAX_RANGE_DAYS (366, a leap year) days, for every pipeline. A step's
`max_range_days` may only lower it (the LLM pipelines set 93: their provider reports are paged per day).
Every bad value is a PermanentStepError with code INVALID_PARAMETERS.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from convergence.pipeline.errors import ErrorCode, PermanentStepError, invalid

MAX_RANGE_DAYS = 366
NAMED_DATES = ("today", "yesterday", "month_start", "month_end")
DEFAULTS = ("yesterday", "current_month")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def utc_today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True)
class DateRange:
    start: date
    end: date  # inclusive

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def each_day(self) -> Iterator[date]:
        for offset in range(self.days):
            yield self.start + timedelta(days=offset)

    def start_datetime(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    def end_datetime(self) -> datetime:
        """Exclusive end: midnight UTC after end_date."""
        after = self.end + timedelta(days=1)
        return datetime(after.year, after.month, after.day, tzinfo=UTC)

    def as_result(self) -> dict[str, str]:
        return {"start_date": self.start.isoformat(), "end_date": self.end.isoformat()}


def _bad(message: str) -> PermanentStepError:
    return invalid(message, ErrorCode.INVALID_PARAMETERS)


def month_bounds(day: date) -> tuple[date, date]:
    first = day.replace(day=1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    return first, last


def parse_date(name: str, value: Any, today: date | None = None) -> date:
    """An ISO date or a named date (NAMED_DATES, UTC)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    today = today or utc_today()
    if text in NAMED_DATES:
        first, last = month_bounds(today)
        return {"today": today, "yesterday": today - timedelta(days=1), "month_start": first,
                "month_end": last}[text]
    if not _ISO_DATE.match(text):
        raise _bad(f"{name} {value!r} is not an ISO date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _bad(f"{name} {value!r} is not a valid calendar date") from None


def _given(value: Any) -> bool:
    return value is not None and value != ""


def _days_setting(config: Mapping[str, Any], name: str, default: int) -> int:
    value = config.get(name, default)
    value = default if value is None or value == "" else value
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _bad(f"{name} {value!r} in the step config is not a whole number") from None
    if not 1 <= number <= MAX_RANGE_DAYS:
        raise _bad(f"{name} {number} in the step config must be between 1 and {MAX_RANGE_DAYS}")
    return number


def run_dates(config: Mapping[str, Any], parameters: Mapping[str, Any], *, default: str | None = None,
              open_end: Literal["start", "yesterday"] = "start", allow_future: bool = True,
              today: date | None = None) -> DateRange:
    """The run's date range (see the module doc). `config` also carries `default`, `lookback_days` and
    `max_range_days`; the `default` argument is used when the config has none.

    `open_end`: with a start and no end, the range is that one day (`start`) or runs until yesterday
    (`yesterday`; a start of today is today alone). `allow_future=False` refuses an end after today."""
    today = today or utc_today()
    raw_start = config.get("start_date") if _given(config.get("start_date")) else parameters.get("start_date")
    raw_end = config.get("end_date") if _given(config.get("end_date")) else parameters.get("end_date")
    one_day = config.get("date") if _given(config.get("date")) else parameters.get("date")
    if not _given(raw_start) and not _given(raw_end) and _given(one_day):
        raw_start = raw_end = one_day
    yesterday = today - timedelta(days=1)
    if _given(raw_start) or _given(raw_end):
        start = parse_date("start_date", raw_start, today) if _given(raw_start) else None
        end = parse_date("end_date", raw_end, today) if _given(raw_end) else None
        if start is None:
            start = end
        elif end is None:
            end = max(start, yesterday) if open_end == "yesterday" and start <= today else start
    else:
        mode = str(config.get("default") or default or "yesterday")
        if mode not in DEFAULTS:
            raise _bad(f"dates default {mode!r} is not one of {', '.join(DEFAULTS)}")
        if mode == "current_month":
            start, end = month_bounds(today)
        else:
            end = yesterday
            start = end - timedelta(days=_days_setting(config, "lookback_days", 1) - 1)
    assert start is not None and end is not None
    if start > end:
        raise _bad(f"start_date {start} is after end_date {end}")
    if not allow_future and end > today:
        raise _bad(f"end_date {end} is in the future (today is {today} UTC)")
    limit = _days_setting(config, "max_range_days", MAX_RANGE_DAYS)
    result = DateRange(start, end)
    if result.days > limit:
        raise _bad(f"date range {start}..{end} is {result.days} days; this pipeline allows at most {limit} "
                   "(max_range_days): split the run into smaller ranges")
    return result
