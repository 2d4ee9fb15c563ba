"""Schedules: EventBridge rule expressions and per-source schedules, as series of UTC slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.rules.schedules import InvalidSchedule, Schedule, parse_rule_expression, source_schedule

NEW_YORK_WINTER = timezone(timedelta(hours=-5))
TOKYO = timezone(timedelta(hours=9))

# A known week of 2026: Sunday 1 March ... Saturday 7 March.
SUNDAY = datetime(2026, 3, 1, tzinfo=UTC)
MONDAY = datetime(2026, 3, 2, tzinfo=UTC)
FRIDAY = datetime(2026, 3, 6, tzinfo=UTC)
PREVIOUS_FRIDAY = datetime(2026, 2, 27, tzinfo=UTC)
NEXT_MONDAY = datetime(2026, 3, 9, tzinfo=UTC)


def at(hour: int, minute: int = 0, second: int = 0, *, day: datetime = SUNDAY) -> datetime:
    return day.replace(hour=hour, minute=minute, second=second)


def assert_utc(moment: datetime) -> None:
    assert moment.utcoffset() == timedelta(0), f"{moment} is not in UTC"


def assert_slots_around(
    expression: str, now: datetime, previous: datetime, following: datetime
) -> None:
    schedule = parse_rule_expression(expression)
    assert schedule.previous_slot(now) == previous
    assert schedule.next_slot(now) == following


# --- rates ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "now", "previous", "following"),
    [
        ("rate(1 minute)", at(19, 7, 30), at(19, 7), at(19, 8)),
        ("rate(15 minutes)", at(19, 7, 30), at(19, 0), at(19, 15)),
        ("rate(15 minutes)", at(19, 59, 59), at(19, 45), at(20, 0)),
        ("rate(2 hours)", at(19, 7, 30), at(18), at(20)),
        ("rate(1 day)", at(19, 7, 30), at(0), at(0, day=MONDAY)),
    ],
)
def test_a_rate_has_slots_aligned_to_the_epoch(
    expression: str, now: datetime, previous: datetime, following: datetime
) -> None:
    # Given a rate rule
    # When asked about a moment between two slots
    # Then the slots around it are aligned to the epoch, not to the moment
    assert_slots_around(expression, now, previous, following)


def test_a_rate_is_kept_as_a_period_with_its_expression() -> None:
    schedule = parse_rule_expression("rate(15 minutes)")
    assert schedule == Schedule("rate(15 minutes)", every=timedelta(minutes=15))


def test_rate_slots_are_in_utc_whatever_zone_now_comes_in() -> None:
    # Given 19:07:30 UTC written as New York winter time
    now = datetime(2026, 3, 1, 14, 7, 30, tzinfo=NEW_YORK_WINTER)
    schedule = parse_rule_expression("rate(15 minutes)")
    # When the slots are computed
    previous, following = schedule.previous_slot(now), schedule.next_slot(now)
    # Then they are the same instants as for UTC, rendered in UTC
    assert (previous, following) == (at(19, 0), at(19, 15))
    assert_utc(previous)
    assert_utc(following)


# --- EventBridge cron -------------------------------------------------------------------------


def test_a_daily_cron_fires_at_noon_utc() -> None:
    schedule = parse_rule_expression("cron(0 12 * * ? *)")
    assert schedule.previous_slot(at(19)) == at(12)
    assert schedule.next_slot(at(19)) == at(12, day=MONDAY)
    assert schedule.previous_slot(at(11, 59)) == at(12, day=SUNDAY - timedelta(days=1))


def test_a_cron_step_fires_every_five_minutes_from_the_hour() -> None:
    schedule = parse_rule_expression("cron(0/5 * * * ? *)")
    assert schedule.previous_slot(at(19, 7, 30)) == at(19, 5)
    assert schedule.next_slot(at(19, 7, 30)) == at(19, 10)


@pytest.mark.parametrize(
    ("expression", "slot", "following"),
    [
        ("rate(1 minute)", at(19, 7), at(19, 8)),
        ("rate(15 minutes)", at(19, 15), at(19, 30)),
        ("rate(2 hours)", at(20), at(22)),
        ("rate(1 day)", at(0), at(0, day=MONDAY)),
        ("cron(0 12 * * ? *)", at(12), at(12, day=MONDAY)),
        ("cron(0/5 * * * ? *)", at(19, 5), at(19, 10)),
        ("cron(0 9 ? * 2-6 *)", at(9, day=FRIDAY), at(9, day=NEXT_MONDAY)),
    ],
)
def test_a_moment_exactly_on_a_rate_or_cron_slot_is_that_slot(
    expression: str, slot: datetime, following: datetime
) -> None:
    assert_slots_around(expression, slot, slot, following)


def test_a_moment_just_after_a_cron_slot_still_belongs_to_it() -> None:
    schedule = parse_rule_expression("cron(0/5 * * * ? *)")
    assert schedule.previous_slot(at(19, 5) + timedelta(microseconds=500)) == at(19, 5)
    assert schedule.previous_slot(at(19, 5) - timedelta(microseconds=1)) == at(19, 0)


def test_eventbridge_weekdays_count_from_sunday_so_2_to_6_is_monday_to_friday() -> None:
    # Given a weekday rule at 09:00 (EventBridge numbers Sunday 1 ... Saturday 7)
    schedule = parse_rule_expression("cron(0 9 ? * 2-6 *)")
    # Then on Sunday the previous slot is Friday and the next one is Monday
    assert schedule.previous_slot(at(12, day=SUNDAY)) == at(9, day=PREVIOUS_FRIDAY)
    assert schedule.next_slot(at(12, day=SUNDAY)) == at(9, day=MONDAY)
    # And Friday itself is a slot, after which the next is Monday
    assert schedule.previous_slot(at(12, day=FRIDAY)) == at(9, day=FRIDAY)
    assert schedule.next_slot(at(12, day=FRIDAY)) == at(9, day=NEXT_MONDAY)


def test_an_nth_weekday_keeps_its_ordinal() -> None:
    schedule = parse_rule_expression("cron(0 9 ? * 6#3 *)")
    # The third Friday of March 2026 is the 20th.
    assert schedule.next_slot(SUNDAY) == datetime(2026, 3, 20, 9, tzinfo=UTC)


def test_cron_slots_are_in_utc_whatever_zone_now_comes_in() -> None:
    # Given Monday 04:00 in Tokyo, which is still Sunday 19:00 UTC
    now = datetime(2026, 3, 2, 4, 0, tzinfo=TOKYO)
    schedule = parse_rule_expression("cron(0 12 * * ? *)")
    # When the slots are computed
    previous, following = schedule.previous_slot(now), schedule.next_slot(now)
    # Then they are noon UTC on Sunday and Monday, in UTC
    assert (previous, following) == (at(12), at(12, day=MONDAY))
    assert_utc(previous)
    assert_utc(following)


def test_cron_weekdays_are_decided_in_utc_not_in_the_zone_of_now() -> None:
    # Given Friday 23:30 in New York, which is already Saturday 04:30 UTC
    now = datetime(2026, 3, 6, 23, 30, tzinfo=NEW_YORK_WINTER)
    schedule = parse_rule_expression("cron(0 9 ? * 2-6 *)")
    # Then the next weekday slot is Monday 09:00 UTC
    assert schedule.next_slot(now) == at(9, day=NEXT_MONDAY)
    assert schedule.previous_slot(now) == at(9, day=FRIDAY)


# --- rejected expressions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("rate(0 minutes)", "at least 1"),
        ("rate(5 weeks)", "not a schedule expression"),
        ("cron(0 12 * * ?)", "six fields"),
        ("cron(0 12 * * ? 2027)", "year"),
        ("cron(61 12 * * ? *)", "not a valid five-field cron"),
        ("every day at noon", "not a schedule expression"),
        ("", "not a schedule expression"),
    ],
)
def test_an_unusable_expression_is_rejected_quoting_it(expression: str, why: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse_rule_expression(expression)
    message = str(caught.value)
    # `"" in message` holds for any message: the empty expression must be shown quoted
    assert (expression or repr(expression)) in message
    assert why in message


def test_invalid_schedule_is_a_value_error() -> None:
    assert issubclass(InvalidSchedule, ValueError)


# --- per-source schedules ---------------------------------------------------------------------


def test_a_source_interval_is_a_rate_aligned_to_the_epoch() -> None:
    schedule = source_schedule("src-1", timedelta(minutes=15), None)
    assert schedule is not None
    assert schedule.previous_slot(at(19, 7, 30)) == at(19, 0)
    assert schedule.next_slot(at(19, 7, 30)) == at(19, 15)


def test_a_source_cron_has_five_fields_in_utc() -> None:
    schedule = source_schedule("src-1", None, "*/15 * * * *")
    assert schedule is not None
    assert schedule.previous_slot(at(19, 7, 30)) == at(19, 0)
    assert schedule.next_slot(at(19, 7, 30)) == at(19, 15)
    assert schedule.previous_slot(at(19, 15)) == at(19, 15)


def test_a_source_without_a_schedule_has_none() -> None:
    assert source_schedule("src-1", None, None) is None


def test_a_source_with_both_interval_and_cron_is_rejected_naming_it() -> None:
    with pytest.raises(InvalidSchedule) as caught:
        source_schedule("src-1", timedelta(minutes=5), "*/5 * * * *")
    assert "'src-1'" in str(caught.value)
    assert "both" in str(caught.value)


@pytest.mark.parametrize("cron", ["61 * * * *", "0 12 * * ? *", "every day", "0 12 * *"])
def test_an_invalid_source_cron_is_rejected_naming_source_and_field(cron: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        source_schedule("src-1", None, cron)
    message = str(caught.value)
    assert "'src-1'" in message
    assert "schedule_cron" in message
    assert repr(cron) in message


@pytest.mark.parametrize("interval", [timedelta(seconds=59), timedelta(0), timedelta(minutes=-5)])
def test_a_source_interval_under_a_minute_is_rejected(interval: timedelta) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        source_schedule("src-1", interval, None)
    assert "'src-1'" in str(caught.value)
    assert "schedule_interval" in str(caught.value)


def test_a_source_interval_of_exactly_a_minute_is_accepted() -> None:
    assert source_schedule("src-1", timedelta(minutes=1), None) is not None
