"""Freshness: when a scheduled source is overdue (shared/rules/freshness.py), and what the
scheduler announces of it, once per episode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.rules.flows import InvalidSourceSetting
from shared.rules.freshness import (
    Announcement,
    Freshness,
    announcement,
    check_overdue_after_periods,
    freshness,
)
from shared.rules.schedules import Schedule, source_schedule
from shared.runtime.catalogue import OVERDUE_AFTER_PERIODS

# Monday 2 March 2026 ... Friday 6 March, Monday 9 March.
MONDAY = datetime(2026, 3, 2, tzinfo=UTC)
FRIDAY = datetime(2026, 3, 6, tzinfo=UTC)
NEXT_MONDAY = datetime(2026, 3, 9, tzinfo=UTC)
EVERY_15 = source_schedule("s", timedelta(minutes=15), None)
WEEKDAYS_AT_9 = source_schedule("s", None, "0 9 * * 1-5")
ADDED = MONDAY - timedelta(days=30)


def fresh(
    now: datetime,
    *,
    schedule: Schedule | None = EVERY_15,
    last_success_at: datetime | None = None,
    expected_since: datetime = ADDED,
    periods: float = OVERDUE_AFTER_PERIODS,
    active: bool = True,
    last_scheduled_slot: datetime | None = None,
) -> Freshness:
    return freshness(
        schedule,
        active=active,
        overdue_after_periods=periods,
        last_success_at=last_success_at,
        expected_since=expected_since,
        last_scheduled_slot=last_scheduled_slot,
        now=now,
    )


# -- the rule ---------------------------------------------------------------------------------


def test_a_source_is_overdue_once_its_periods_pass_after_its_last_success() -> None:
    success = MONDAY.replace(hour=10, minute=2)

    at_the_limit = fresh(success + timedelta(minutes=30), last_success_at=success)
    past_it = fresh(success + timedelta(minutes=30, microseconds=1), last_success_at=success)

    assert (at_the_limit.overdue, past_it.overdue) == (False, True)
    assert past_it.overdue_at == success + timedelta(minutes=30)
    assert past_it.since == past_it.last_success_at == success


def test_the_periods_are_the_sources_own_and_may_be_fractional() -> None:
    success = MONDAY.replace(hour=10)
    now = success + timedelta(minutes=25)

    assert fresh(now, last_success_at=success, periods=1.5).overdue
    assert not fresh(now, last_success_at=success, periods=2).overdue


def test_it_is_measured_from_when_it_was_added_enabled_or_rescheduled_if_later() -> None:
    # Never succeeded: from when it was added
    added = MONDAY.replace(hour=10)
    assert fresh(added + timedelta(minutes=29), expected_since=added).overdue is False
    assert fresh(added + timedelta(minutes=31), expected_since=added).overdue is True
    # Succeeded long ago, then disabled and enabled again just now: not overdue yet
    enabled = MONDAY.replace(hour=12)
    again = fresh(enabled + timedelta(minutes=10), last_success_at=ADDED, expected_since=enabled)
    assert (again.overdue, again.since) == (False, enabled)


@pytest.mark.parametrize(
    ("schedule", "active"), [(None, True), (EVERY_15, False)], ids=["unscheduled", "disabled"]
)
def test_a_source_nobody_expects_to_run_is_never_overdue(
    schedule: Schedule | None, active: bool
) -> None:
    state = fresh(NEXT_MONDAY, schedule=schedule, active=active, last_success_at=ADDED)

    assert state == Freshness(ADDED, None, None, None, False)


def test_a_weekday_crons_weekend_is_not_a_missed_run() -> None:
    # Friday's run succeeded at 09:05; the next slot is Monday 09:00: the period is 3 days
    friday_success = FRIDAY.replace(hour=9, minute=5)
    sunday = fresh(
        FRIDAY + timedelta(days=2), schedule=WEEKDAYS_AT_9, last_success_at=friday_success
    )
    assert not sunday.overdue
    # Monday's succeeded too; Tuesday's and Wednesday's did not: overdue two days after Monday's
    monday_success = NEXT_MONDAY.replace(hour=9, minute=5)
    wednesday = fresh(
        NEXT_MONDAY + timedelta(days=2, hours=9, minutes=6),
        schedule=WEEKDAYS_AT_9,
        last_success_at=monday_success,
    )
    assert wednesday.overdue
    assert wednesday.overdue_at == monday_success + timedelta(days=2)


def test_the_next_due_slot_is_the_current_one_until_the_scheduler_starts_it() -> None:
    now = MONDAY.replace(hour=10, minute=7)
    current, following = MONDAY.replace(hour=10), MONDAY.replace(hour=10, minute=15)

    assert fresh(now).next_due_at == current
    assert fresh(now, last_scheduled_slot=current - timedelta(minutes=15)).next_due_at == current
    assert fresh(now, last_scheduled_slot=current).next_due_at == following


def test_a_period_is_a_rates_interval_or_the_gap_between_a_crons_slots() -> None:
    assert EVERY_15 is not None and WEEKDAYS_AT_9 is not None
    assert EVERY_15.period_at(MONDAY) == timedelta(minutes=15)
    assert WEEKDAYS_AT_9.period_at(MONDAY.replace(hour=12)) == timedelta(days=1)
    assert WEEKDAYS_AT_9.period_at(FRIDAY.replace(hour=12)) == timedelta(days=3)
    # A moment exactly on a slot is in the period that slot starts
    assert WEEKDAYS_AT_9.period_at(FRIDAY.replace(hour=9)) == timedelta(days=3)


@pytest.mark.parametrize("periods", [1.5, 2, 100])
def test_the_overdue_periods_accepted(periods: float) -> None:
    assert check_overdue_after_periods("s", periods) == periods


@pytest.mark.parametrize("periods", [1, 0.5, 0, -2, 101, float("nan"), float("inf"), True])
def test_the_overdue_periods_refused_name_the_setting_and_the_bounds(periods: float) -> None:
    with pytest.raises(InvalidSourceSetting) as refused:
        check_overdue_after_periods("acme", periods)

    message = str(refused.value)
    assert "source 'acme': overdue_after_periods" in message
    assert "over 1 and at most 100 (default 2)" in message


# -- properties -------------------------------------------------------------------------------

moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)
intervals = st.integers(min_value=1, max_value=7 * 24 * 60).map(lambda m: timedelta(minutes=m))
crons = st.sampled_from(["*/5 * * * *", "0 * * * *", "30 6 * * *", "0 9 * * 1-5", "0 0 1 * *"])
schedules = st.one_of(
    intervals.map(lambda every: source_schedule("s", every, None)),
    crons.map(lambda cron: source_schedule("s", None, cron)),
)
periods = st.floats(min_value=1.0, max_value=100.0, exclude_min=True)
offsets = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400))


@given(intervals, periods, moments, offsets, st.booleans())
def test_a_rates_source_is_overdue_exactly_when_its_periods_have_passed(
    every: timedelta, multiple: float, since: datetime, elapsed: timedelta, succeeded: bool
) -> None:
    state = fresh(
        since + elapsed,
        schedule=source_schedule("s", every, None),
        periods=multiple,
        last_success_at=since if succeeded else None,
        expected_since=since if not succeeded else since - timedelta(days=1),
    )

    assert state.overdue == (elapsed > every * multiple)


@given(schedules, periods, moments, offsets, offsets)
def test_once_overdue_a_source_stays_overdue_until_something_moves_its_since(
    schedule: Schedule, multiple: float, since: datetime, first: timedelta, more: timedelta
) -> None:
    earlier = fresh(since + first, schedule=schedule, periods=multiple, expected_since=since)
    later = fresh(since + first + more, schedule=schedule, periods=multiple, expected_since=since)

    assert later.overdue or not earlier.overdue
    assert earlier.overdue_at == later.overdue_at


@given(schedules, periods, moments, st.floats(min_value=0, max_value=1, exclude_max=True))
def test_a_source_that_succeeded_in_the_current_period_is_never_overdue(
    schedule: Schedule, multiple: float, now: datetime, fraction: float
) -> None:
    # Its last success came after the slot of the period `now` is in
    current = schedule.previous_slot(now)
    success = current + (now - current) * fraction

    assert not fresh(now, schedule=schedule, periods=multiple, last_success_at=success).overdue


@given(schedules, periods, moments, st.lists(offsets, min_size=1, max_size=8))
def test_ticks_without_a_success_announce_one_episode_once_and_a_success_ends_it(
    schedule: Schedule, multiple: float, since: datetime, tick_offsets: list[timedelta]
) -> None:
    recorded: datetime | None = None
    said: list[Announcement] = []
    # Ticks in any order (a redelivered old tick comes late) with no success between
    for offset in tick_offsets:
        state = fresh(since + offset, schedule=schedule, periods=multiple, expected_since=since)
        what = announcement(state, recorded)
        if what is Announcement.OVERDUE:
            recorded = state.since
        if what is not None:
            said.append(what)
    any_overdue = any(
        fresh(since + offset, schedule=schedule, periods=multiple, expected_since=since).overdue
        for offset in tick_offsets
    )
    assert said == ([Announcement.OVERDUE] if any_overdue else [])

    # Then a success: recovered, once
    success = since + max(tick_offsets) + timedelta(seconds=1)
    after = fresh(success, schedule=schedule, periods=multiple, last_success_at=success)
    expected = Announcement.RECOVERED if recorded is not None else None
    assert announcement(after, recorded) is expected
    assert announcement(after, None) is None


def test_an_episode_a_person_ends_is_withdrawn_and_a_new_since_is_a_new_episode() -> None:
    announced = ADDED
    disabled = fresh(NEXT_MONDAY, active=False)
    overdue_again = fresh(NEXT_MONDAY, expected_since=MONDAY)  # re-enabled Monday, still stale

    assert announcement(disabled, announced) is Announcement.WITHDRAWN
    assert announcement(overdue_again, announced) is Announcement.OVERDUE
    assert announcement(overdue_again, MONDAY) is None
    # A tick redelivered late, its moment before the episode began, ends nothing
    late_tick = fresh(ADDED + timedelta(minutes=1))
    assert not late_tick.overdue
    assert announcement(late_tick, announced) is None
