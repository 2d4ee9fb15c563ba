"""shared.rules.backfills: the slices of a range, the request's checks, the slice length an
operator writes, the names of slice executions, and where a backfill stands."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.rules.backfills import (
    MAX_SLICES,
    SLICE_ATTEMPTS,
    BackfillRange,
    BackfillState,
    BackfillStatus,
    InvalidBackfill,
    NextSlice,
    SliceAttempt,
    check_request,
    parse_slice_length,
    progress,
    slice_nonce,
)
from shared.rules.flows import WindowField
from shared.runtime.executions import execution_name

DAY = timedelta(days=1)
T1 = datetime(2026, 3, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 18, 41, 57, tzinfo=UTC)
THREE_DAYS = BackfillRange(WindowField.LAST_MODIFIED, T1, T1 + 3 * DAY, DAY)


# -- slices ------------------------------------------------------------------------------------


def test_three_days_in_slices_of_a_day_are_three_half_open_days() -> None:
    windows = list(THREE_DAYS.slices())
    assert [(w.start, w.end) for w in windows] == [
        (T1, T1 + DAY),
        (T1 + DAY, T1 + 2 * DAY),
        (T1 + 2 * DAY, T1 + 3 * DAY),
    ]
    first = windows[0]
    assert first.contains(T1) and not first.contains(T1 + DAY)
    assert first.contains(T1 + DAY - timedelta(microseconds=1))
    assert first.last_included == T1 + DAY - timedelta(microseconds=1)
    # A slice is a range of the past: no connector reads past its end
    assert not first.reads_past_end


def test_the_last_slice_is_cut_at_the_range_end() -> None:
    wanted = replace(THREE_DAYS, end=T1 + 2 * DAY + timedelta(hours=5))
    assert wanted.slice_count == 3
    assert wanted.slice_window(3).end == wanted.end
    assert wanted.slice_window(3).start == T1 + 2 * DAY


def test_a_slice_outside_the_range_is_an_error() -> None:
    for number in (0, 4):
        with pytest.raises(ValueError, match="not one of 1 to 3"):
            THREE_DAYS.slice_window(number)


moments = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
lengths = st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=400))


@given(start=moments, span=lengths, length=lengths, probe=st.floats(0, 1))
def test_slices_cover_the_range_exactly_without_overlap(
    start: datetime, span: timedelta, length: timedelta, probe: float
) -> None:
    wanted = BackfillRange(WindowField.LAST_MODIFIED, start, start + span, length)
    if wanted.slice_count > 10_000:
        return  # (check_request refuses these; enumerating them proves nothing more)
    windows = list(wanted.slices())
    # As many as the length needs, and no more
    assert len(windows) == wanted.slice_count
    assert (len(windows) - 1) * length < span <= len(windows) * length
    # Side by side from the range's start to its end: each starts where the last ended
    assert windows[0].start == wanted.start and windows[-1].end == wanted.end
    for before, after in pairwise(windows):
        assert before.end == after.start
    assert all(w.start < w.end and w.start_inclusive and w.end_exclusive for w in windows)
    # So every instant of [start, end) is in exactly one slice, and no other instant is in any
    moment = start + span * probe
    if moment < wanted.end:
        assert sum(w.contains(moment) for w in windows) == 1
    assert not any(w.contains(wanted.end) for w in windows)
    assert not any(w.contains(start - timedelta(microseconds=1)) for w in windows)


@given(start=moments, span=lengths, length=lengths)
def test_a_checked_request_has_at_least_one_slice_and_at_most_the_bound(
    start: datetime, span: timedelta, length: timedelta
) -> None:
    wanted = BackfillRange(WindowField.LAST_MODIFIED, start, start + span, length)
    try:
        check_request("src", wanted, now=datetime(2100, 1, 2, tzinfo=UTC))
    except InvalidBackfill:
        return
    assert 1 <= wanted.slice_count <= MAX_SLICES


# -- the request -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        (
            replace(THREE_DAYS, end=T1),
            r"--from 2026-03-01T00:00:00Z is not before --to 2026-03-01T00:00:00Z; "
            r"the range is \[from, to\)",
        ),
        (replace(THREE_DAYS, end=NOW + DAY), r"is after now .* a backfill loads the past"),
        (replace(THREE_DAYS, slice_length=timedelta(seconds=30)), r"shorter than 0:01:00"),
        (
            replace(THREE_DAYS, end=T1 + 200 * DAY, slice_length=timedelta(hours=1)),
            r"make 4800 runs, over 1000; give a --slice of at least 4:48:00",
        ),
    ],
)
def test_a_request_the_rules_refuse_says_what_to_change(
    wanted: BackfillRange, message: str
) -> None:
    with pytest.raises(InvalidBackfill, match=message) as refused:
        check_request("acme-listings", wanted, now=NOW)
    assert "backfill of 'acme-listings'" in str(refused.value)


def test_a_range_up_to_now_is_accepted() -> None:
    wanted = BackfillRange(WindowField.SOLD_DATE, NOW - DAY, NOW, timedelta(hours=6))
    assert check_request("src", wanted, now=NOW) is wanted


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("1d", DAY),
        ("6h", timedelta(hours=6)),
        ("30m", timedelta(minutes=30)),
        ("2w", timedelta(weeks=2)),
        (" 7d ", 7 * DAY),
    ],
)
def test_slice_lengths_are_a_number_and_a_unit(text: str, length: timedelta) -> None:
    assert parse_slice_length(text) == length


@pytest.mark.parametrize("text", ["", "d", "1", "1.5d", "1y", "-1d", "1 day", "9999999d"])
def test_a_slice_length_that_is_not_one_says_how_to_write_one(text: str) -> None:
    with pytest.raises(InvalidBackfill, match=r"m \(minutes\), h \(hours\), d \(days\) or w"):
        parse_slice_length(text)


def test_each_attempt_of_each_slice_has_its_own_name_never_cut() -> None:
    nonces = {
        slice_nonce(backfill, number, attempt)
        for backfill in (1, 2, 999_999)
        for number in (1, 2, MAX_SLICES)
        for attempt in (1, 2, 3)
    }
    assert len(nonces) == 27
    longest_source_id = "s" * 40  # public.source's CHECK
    for nonce in nonces:
        assert execution_name(longest_source_id, NOW, nonce).endswith(f"-{nonce}")


# -- where a backfill stands ---------------------------------------------------------------------


def attempt(number: int, tried: int, status: str | None, at: datetime = NOW) -> SliceAttempt:
    return SliceAttempt(number, tried, f"run-{number}-{tried}", at, status)


def test_a_new_backfill_starts_its_first_slice() -> None:
    now = progress(BackfillStatus.ACTIVE, THREE_DAYS, [])
    assert (now.state, now.slices_done, now.slice_count) == (BackfillState.READY, 0, 3)
    assert now.start_next == NextSlice(1, 1)


def test_a_slice_under_way_or_not_yet_validated_starts_nothing() -> None:
    for status in (None, "running", "downloaded"):
        now = progress(BackfillStatus.ACTIVE, THREE_DAYS, [attempt(1, 1, status)])
        assert (now.state, now.start_next) == (BackfillState.RUNNING, None), status


def test_slices_go_one_after_the_other_until_all_succeeded() -> None:
    one = attempt(1, 1, "succeeded")
    now = progress(BackfillStatus.ACTIVE, THREE_DAYS, [one])
    assert (now.state, now.slices_done, now.start_next) == (
        BackfillState.READY,
        1,
        NextSlice(2, 1),
    )
    done = [one, attempt(2, 1, "succeeded"), attempt(3, 1, "succeeded")]
    finished = progress(BackfillStatus.ACTIVE, THREE_DAYS, done)
    assert (finished.state, finished.slices_done, finished.start_next) == (
        BackfillState.SUCCEEDED,
        3,
        None,
    )
    assert finished.state.finished


def test_a_skipped_slice_goes_again_without_counting_as_a_failure() -> None:
    now = progress(BackfillStatus.ACTIVE, THREE_DAYS, [attempt(1, 1, "skipped")])
    assert (now.state, now.failures, now.start_next) == (BackfillState.READY, 0, NextSlice(1, 2))


def test_a_failing_slice_goes_again_until_its_attempts_are_spent() -> None:
    failed = [attempt(1, tried, "failed") for tried in range(1, SLICE_ATTEMPTS)]
    now = progress(BackfillStatus.ACTIVE, THREE_DAYS, failed)
    assert (now.state, now.failures) == (BackfillState.READY, SLICE_ATTEMPTS - 1)
    assert now.start_next == NextSlice(1, SLICE_ATTEMPTS)

    spent = [*failed, attempt(1, SLICE_ATTEMPTS, "failed")]
    stopped = progress(BackfillStatus.ACTIVE, THREE_DAYS, spent)
    assert (stopped.state, stopped.failures, stopped.start_next) == (
        BackfillState.FAILED,
        SLICE_ATTEMPTS,
        None,
    )
    assert stopped.current == spent[-1]


def test_a_retry_gives_the_slice_its_attempts_again() -> None:
    spent = [attempt(1, tried, "failed", NOW) for tried in range(1, SLICE_ATTEMPTS + 1)]
    now = progress(BackfillStatus.ACTIVE, THREE_DAYS, spent, retried_at=NOW + timedelta(seconds=1))
    assert (now.state, now.failures, now.start_next) == (
        BackfillState.READY,
        0,
        NextSlice(1, SLICE_ATTEMPTS + 1),
    )


def test_a_slice_run_an_operator_cancelled_stops_the_backfill_until_a_retry() -> None:
    cancelled = [attempt(1, 1, "succeeded"), attempt(2, 1, "cancelled")]
    now = progress(BackfillStatus.ACTIVE, THREE_DAYS, cancelled)
    assert (now.state, now.slices_done, now.start_next) == (BackfillState.FAILED, 1, None)
    retried = progress(
        BackfillStatus.ACTIVE, THREE_DAYS, cancelled, retried_at=NOW + timedelta(seconds=1)
    )
    assert retried.start_next == NextSlice(2, 2)


@pytest.mark.parametrize(
    "status", [BackfillStatus.AWAITING_APPROVAL, BackfillStatus.REJECTED, BackfillStatus.CANCELLED]
)
def test_a_backfill_people_did_not_let_run_starts_nothing(status: BackfillStatus) -> None:
    now = progress(status, THREE_DAYS, [attempt(1, 1, "succeeded")])
    assert (now.state.value, now.slices_done, now.start_next) == (status.value, 1, None)
