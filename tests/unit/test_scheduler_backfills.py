"""The scheduler's decisions on backfills: which slice starts for which source at a tick (one run
at a time per source, Normal runs first), and which recorded slice executions are started again
because validation never saw them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.scheduler.domain import (
    BackfillCandidate,
    SliceStart,
    backfill_candidate,
    slices_to_start,
    unseen_starts,
)
from shared.rules.backfills import SliceAttempt, slice_nonce

NOW = datetime(2026, 11, 22, 19, 7, 30, tzinfo=UTC)
DAY = timedelta(days=1)
T1 = datetime(2026, 3, 1, tzinfo=UTC)


def a_backfill(backfill_id: int = 7, source_id: str = "src-1", **changes: Any) -> dict[str, Any]:
    """An active backfill's row, with its source's lock (as the scheduler reads it)."""
    return {
        "backfill_id": backfill_id,
        "source_id": source_id,
        "status": "active",
        "window_field": "last_modified",
        "range_start": T1,
        "range_end": T1 + 3 * DAY,
        "slice_length": DAY,
        "retried_at": None,
        "locked_by": None,
        "lock_expires_at": None,
        **changes,
    }


def candidate(*attempts: SliceAttempt, **changes: Any) -> BackfillCandidate:
    return backfill_candidate(a_backfill(**changes), list(attempts))


def attempt(number: int, status: str | None, tried: int = 1) -> SliceAttempt:
    return SliceAttempt(number, tried, f"src-1-x-{number}-{tried}", NOW - DAY, status)


def test_a_new_backfill_of_a_free_source_starts_its_first_slice_now() -> None:
    assert slices_to_start([candidate()], NOW, busy=()) == [SliceStart(7, "src-1", 1, 1, NOW)]


def test_the_next_slice_starts_once_the_last_one_succeeded() -> None:
    [start] = slices_to_start([candidate(attempt(1, "succeeded"))], NOW, busy=())
    assert (start.slice_number, start.attempt) == (2, 1)
    assert start.nonce == slice_nonce(7, 2, 1)


def test_a_source_whose_normal_run_this_tick_started_gets_no_slice() -> None:
    assert slices_to_start([candidate()], NOW, busy={"src-1"}) == []


def test_a_locked_source_gets_no_slice_until_its_lease_is_over() -> None:
    locked = candidate(locked_by="arn:normal", lock_expires_at=NOW + timedelta(minutes=5))
    assert slices_to_start([locked], NOW, busy=()) == []
    expired = candidate(locked_by="arn:normal", lock_expires_at=NOW - timedelta(seconds=1))
    assert len(slices_to_start([expired], NOW, busy=())) == 1


def test_one_slice_at_a_time_per_source_oldest_backfill_first() -> None:
    # Given two backfills of src-1 (the newer listed first) and one of src-2
    newer = candidate(backfill_id=9)
    older = candidate(backfill_id=8)
    other = candidate(backfill_id=10, source_id="src-2")
    starts = slices_to_start([newer, older, other], NOW, busy=())
    # Then src-1 starts the older one's slice only, src-2 its own
    assert [(s.backfill_id, s.source_id) for s in starts] == [(8, "src-1"), (10, "src-2")]


def test_a_slice_under_way_holds_its_source_for_every_backfill_of_it() -> None:
    running = candidate(attempt(1, "running"), backfill_id=8)
    waiting = candidate(backfill_id=9)
    assert slices_to_start([running, waiting], NOW, busy=()) == []


def test_a_slice_execution_validation_never_saw_is_started_again_under_its_name() -> None:
    # Given slice 2's execution was recorded at its tick but has no ledger row yet
    recorded = SliceAttempt(2, 1, "src-1-x-2-1", NOW - timedelta(minutes=3), None)
    unseen = candidate(attempt(1, "succeeded"), recorded)
    # Then it is started again with the same start time and nonce (the same name)
    assert unseen_starts([unseen]) == [SliceStart(7, "src-1", 2, 1, recorded.started_at)]
    # And one the ledger knows is not
    assert unseen_starts([candidate(attempt(1, "succeeded"), attempt(2, "running"))]) == []
