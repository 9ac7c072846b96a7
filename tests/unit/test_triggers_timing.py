"""Tick arithmetic of schedules (`noetl.triggers.timing`) on fixed instants: cron in a time zone
across both daylight-saving changes, intervals, catch-up policies, and the spec checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from noetl.errors import ValidationFailed
from noetl.triggers.specs import schedule_spec, subscription_spec
from noetl.triggers.timing import Timing, due_ticks, parse_interval

NY = ZoneInfo("America/New_York")


def local(ticks: list[datetime], zone: ZoneInfo = NY) -> list[str]:
    return [t.astimezone(zone).isoformat() for t in ticks]


def test_a_daily_0230_in_new_york_runs_once_on_the_spring_forward_day() -> None:
    timing = Timing(cron="30 2 * * *", timezone="America/New_York")
    ticks = timing.ticks(datetime(2025, 3, 8, 12, tzinfo=NY), datetime(2025, 3, 10, 12, tzinfo=NY))
    # 2025-03-09 02:30 does not exist (02:00 -> 03:00): it runs once, at the end of the gap
    assert local(ticks) == ["2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00"]
    on_the_day = [t for t in ticks if t.astimezone(NY).date().isoformat() == "2025-03-09"]
    assert len(on_the_day) == 1
    # from the shifted tick, the next one is the next day's 02:30 (not 03:00 again)
    assert local([timing.next_after(ticks[0])]) == ["2025-03-10T02:30:00-04:00"]


def test_a_fixed_time_in_the_repeated_fall_back_hour_runs_once() -> None:
    timing = Timing(cron="30 1 * * *", timezone="America/New_York")
    ticks = timing.ticks(datetime(2025, 11, 1, 12, tzinfo=NY), datetime(2025, 11, 3, 12, tzinfo=NY))
    assert local(ticks) == ["2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"]
    assert local([timing.last_before(datetime(2025, 11, 2, 12, tzinfo=NY))]) == ["2025-11-02T01:30:00-04:00"]


def test_wildcard_jobs_tick_by_the_clock_through_both_changes() -> None:
    half_hourly = Timing(cron="*/30 * * * *", timezone="America/New_York")
    fall = half_hourly.ticks(datetime(2025, 11, 2, 0, 45, tzinfo=NY), datetime(2025, 11, 2, 2, 0, tzinfo=NY))
    # 01:00 and 01:30 happen twice: every 30 minutes of real time runs
    assert local(fall) == [
        "2025-11-02T01:00:00-04:00",
        "2025-11-02T01:30:00-04:00",
        "2025-11-02T01:00:00-05:00",
        "2025-11-02T01:30:00-05:00",
        "2025-11-02T02:00:00-05:00",
    ]
    hourly = Timing(cron="30 * * * *", timezone="America/New_York")
    spring = hourly.ticks(datetime(2025, 3, 9, 0, 45, tzinfo=NY), datetime(2025, 3, 9, 4, 0, tzinfo=NY))
    assert local(spring) == ["2025-03-09T01:30:00-05:00", "2025-03-09T03:30:00-04:00"]


def test_six_fields_have_seconds_first_and_intervals_align_to_the_epoch() -> None:
    every_five = Timing(cron="*/5 * * * * *")
    start = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert [t.second for t in every_five.ticks(start, start + timedelta(seconds=12))] == [5, 10]
    interval = Timing(every=90)
    assert interval.next_after(datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)) == datetime(
        2026, 1, 1, 0, 1, 30, tzinfo=UTC
    )
    assert interval.last_before(datetime(2026, 1, 1, 0, 1, 30, tzinfo=UTC)) == datetime(
        2026, 1, 1, tzinfo=UTC
    )
    assert parse_interval("1h30m") == 5400 and parse_interval("250ms") == 0.25 and parse_interval(2) == 2


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [("skip", [8, 9, 10]), ("one", [7, 8, 9, 10]), ("all", list(range(11)))],
)
def test_catch_up_after_an_outage(catchup: str, expected: list[int]) -> None:
    cursor = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)  # ticks 0..10 fell due while nobody ran
    now = cursor + timedelta(seconds=10)
    ticks = due_ticks(Timing(every=1), cursor, now, catchup, grace=2.0)
    assert [t.second for t in ticks] == expected


def test_no_missed_tick_in_normal_operation_whatever_the_policy() -> None:
    cursor = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    for catchup in ("skip", "one", "all"):
        assert due_ticks(Timing(every=1), cursor, cursor + timedelta(milliseconds=300), catchup, 2.0) == [
            cursor
        ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"cron": "61 * * * *"}, "not a valid cron"),
        ({"cron": "* * * *"}, "expected 5 fields"),
        ({"every": "soon"}, "every"),
        ({"every": "1s", "cron": "* * * * *"}, "exactly one"),
        ({"every": "1s", "timezone": "Mars/Olympus"}, "unknown IANA"),
        ({"every": "1s", "catchup": "some"}, "catchup"),
        ({"every": "1s", "max_active": 0}, "max_active"),
        ({"every": "1s", "max_active": 10**7}, "max_active: expected an integer from 1 to 1,000,000"),
        ({"every": "1s", "colour": "red"}, "unknown schedule field"),
        ({"cron": "0 0 31 2 *"}, "never ticks"),
        ({"every": 366 * 86400 + 1}, "at most"),
        ({"every": "1s", "timezone": "Europe"}, "unknown IANA"),
    ],
)
def test_bad_schedule_specs_name_the_field(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        schedule_spec(raw)


def test_subscription_spec_defaults() -> None:
    spec = subscription_spec({"subject": "orders.created"})
    assert (spec.execution_pool, spec.dedup_header, spec.dedup_window, spec.deliver) == (
        "subscription",
        "Nats-Msg-Id",
        300.0,
        "new",
    )
    with pytest.raises(ValidationFailed, match="subject"):
        subscription_spec({"subject": "has space"})
