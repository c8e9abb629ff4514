"""Schedule slots and default parameters (pure logic; the fan-out itself is tested on the emulators)."""

from datetime import UTC, datetime, timedelta

from convergence.pipeline.models import Schedule
from convergence.publisher.schedule import due_slots, schedule_parameters


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_daily_slot_inside_the_window_only():
    daily = Schedule(type="daily", time="02:00")
    assert due_slots(daily, at("2026-11-21T01:00"), at("2026-11-21T02:00")) == [at("2026-11-21T02:00")]
    assert due_slots(daily, at("2026-11-21T02:00"), at("2026-11-21T03:00")) == []  # window is (start, end]


def test_time_zone_is_honoured():
    tokyo = Schedule(type="daily", time="09:00", timezone="Asia/Tokyo")  # 00:00 UTC
    assert due_slots(tokyo, at("2026-11-20T23:30"), at("2026-11-21T00:30")) == [at("2026-11-21T00:00")]


def test_hourly_and_monthly():
    hourly = Schedule(type="hourly", time="00:15")
    assert len(due_slots(hourly, at("2026-11-21T00:00"), at("2026-11-21T06:00"))) == 6
    monthly = Schedule(type="monthly", time="03:00", day_of_month=1)
    month = due_slots(monthly, at("2026-11-15T00:00"), at("2026-12-15T00:00"))
    assert month == [at("2026-12-01T03:00")]


def test_same_tick_twice_gives_the_same_slots():
    daily = Schedule(type="daily", time="02:00")
    end = at("2026-11-21T02:30")
    assert due_slots(daily, end - timedelta(hours=1), end) == due_slots(daily, end - timedelta(hours=1), end)


def test_default_parameters_from_slot_placeholders():
    daily = Schedule(type="daily", time="02:00", parameters={"start_date": "{yesterday}", "end_date": "{yesterday}"})
    assert schedule_parameters(daily, at("2026-03-01T02:00")) == {"start_date": "2026-02-28", "end_date": "2026-02-28"}
    monthly = Schedule(type="monthly", time="02:00", parameters={"month": "{month}", "start": "{month_start}",
                                                                 "end": "{month_end}"})
    assert schedule_parameters(monthly, at("2026-02-01T02:00")) == {
        "month": "2026-02", "start": "2026-02-01", "end": "2026-02-28"}
