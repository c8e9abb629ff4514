"""When is a scheduled pipeline due, and with which default parameters.

A tick covers the window (tick - interval, tick]. A pipeline is due for every schedule slot inside that
window, so a late or missed tick is caught up by the next one as long as the window covers it, and a
duplicated tick yields the same slots and therefore the same deterministic run_ids.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from convergence.pipeline.context import resolve_placeholders
from convergence.pipeline.models import Schedule


def due_slots(schedule: Schedule, window_start: datetime, window_end: datetime) -> list[datetime]:
    """Slot times (UTC) in (window_start, window_end]."""
    zone = ZoneInfo(schedule.timezone)
    hour, minute = (int(part) for part in schedule.time.split(":"))
    slots: list[datetime] = []
    local_day = window_start.astimezone(zone).date() - timedelta(days=1)
    last_day = window_end.astimezone(zone).date() + timedelta(days=1)
    while local_day <= last_day:
        candidates: list[datetime]
        if schedule.type == "hourly":
            candidates = [datetime.combine(local_day, time(h, minute), zone) for h in range(24)]
        elif schedule.type == "daily" or local_day.day == schedule.day_of_month:  # monthly: one day
            candidates = [datetime.combine(local_day, time(hour, minute), zone)]
        else:
            candidates = []
        for slot in candidates:
            slot_utc = slot.astimezone(UTC)
            if window_start < slot_utc <= window_end:
                slots.append(slot_utc)
        local_day += timedelta(days=1)
    return sorted(set(slots))


def slot_names(slot: datetime, timezone: str) -> dict[str, str]:
    """Placeholders for schedule parameters, in the schedule's own time zone."""
    local = slot.astimezone(ZoneInfo(timezone))
    day = local.date()
    month_start = day.replace(day=1)
    previous_month_end = month_start - timedelta(days=1)
    next_month = (month_start + timedelta(days=32)).replace(day=1)
    return {
        "slot": slot.strftime("%Y-%m-%dT%H:%MZ"),
        "slot_date": day.isoformat(),
        "slot_hour": local.strftime("%H"),
        "yesterday": (day - timedelta(days=1)).isoformat(),
        "month_start": month_start.isoformat(),
        "month_end": (next_month - timedelta(days=1)).isoformat(),
        "month": month_start.strftime("%Y-%m"),
        "previous_month_start": previous_month_end.replace(day=1).isoformat(),
        "previous_month_end": previous_month_end.isoformat(),
        "previous_month": previous_month_end.strftime("%Y-%m"),
    }


def schedule_parameters(schedule: Schedule, slot: datetime) -> dict[str, str]:
    return resolve_placeholders(dict(schedule.parameters), slot_names(slot, schedule.timezone))


