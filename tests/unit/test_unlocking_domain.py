"""services.unlocking.domain: whether a success may end a run, and where it leaves the cursor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.unlocking.domain import (
    CursorMove,
    RunNotDownloaded,
    check_success,
    cursor_move,
    holds_lock,
)
from shared.errors import LockLost
from shared.rules.flows import DEFAULT_LATENESS_ALLOWANCE, overlap

ME = "arn:aws:states:eu-west-1:123456789012:execution:sourceflow-run:acme-listings-me"
OTHER = "arn:aws:states:eu-west-1:123456789012:execution:sourceflow-run:acme-listings-other"
CURSOR = datetime(2026, 11, 21, 18, 40, 2, tzinfo=UTC)
NEWEST = datetime(2026, 11, 22, 18, 0, 0, tzinfo=UTC)
LANDED_SINCE = datetime(2026, 11, 1, tzinfo=UTC)


def a_run(**changes: Any) -> dict[str, Any]:
    return {
        "status": "downloaded",
        "flow_type": "normal",
        "max_last_modified": NEWEST,
        "lateness_allowance": DEFAULT_LATENESS_ALLOWANCE,
        **changes,
    }


def a_source(**changes: Any) -> dict[str, Any]:
    return {
        "locked_by": ME,
        "last_modified_date": CURSOR,
        "landed_since": LANDED_SINCE,
        **changes,
    }


def check(run: dict[str, Any] | None, source: dict[str, Any] | None) -> None:
    check_success(run, source, source_id="acme-listings", execution_arn=ME)


# --- the lock -----------------------------------------------------------------------------------


def test_only_the_execution_named_on_the_lock_holds_it() -> None:
    assert holds_lock(a_source(), ME)
    assert not holds_lock(a_source(locked_by=OTHER), ME)
    assert not holds_lock(a_source(locked_by=None), ME)
    assert not holds_lock(None, ME)


# --- may a success end the run ------------------------------------------------------------------


def test_a_downloaded_run_whose_execution_holds_the_lock_may_succeed() -> None:
    check(a_run(), a_source())


@pytest.mark.parametrize(
    ("run", "said"),
    [
        pytest.param(None, "'missing'", id="no-run"),
        pytest.param(a_run(status="running"), "'running'", id="not-downloaded"),
        pytest.param(a_run(status="failed"), "'failed'", id="failed"),
    ],
)
def test_a_run_that_is_not_downloaded_cannot_succeed(run: dict[str, Any] | None, said: str) -> None:
    with pytest.raises(RunNotDownloaded, match=said) as caught:
        check(run, a_source())
    assert caught.value.error_name == "RunNotDownloaded"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(a_source(locked_by=OTHER), id="another-execution"),
        pytest.param(a_source(locked_by=None), id="unlocked"),
        pytest.param(None, id="no-source"),
    ],
)
def test_a_success_without_the_lock_does_not_move_the_cursor(
    source: dict[str, Any] | None,
) -> None:
    with pytest.raises(LockLost, match="the cursor is not moved"):
        check(a_run(), source)


# --- the cursor ---------------------------------------------------------------------------------


def test_a_normal_run_moves_the_cursor_to_the_newest_stamp_it_loaded() -> None:
    move = cursor_move(a_run(), a_source())
    assert move == CursorMove(
        before=CURSOR,
        after=NEWEST,
        moves=True,
        landed_since=NEWEST - overlap(DEFAULT_LATENESS_ALLOWANCE),
    )


def test_the_cursor_never_moves_backwards() -> None:
    move = cursor_move(a_run(max_last_modified=CURSOR - timedelta(days=1)), a_source())
    assert (move.before, move.after, move.moves) == (CURSOR, CURSOR, True)


def test_a_run_that_loaded_nothing_leaves_the_cursor_where_it_was() -> None:
    move = cursor_move(a_run(max_last_modified=None), a_source())
    assert (move.after, move.moves) == (CURSOR, True)


def test_the_first_run_sets_the_cursor() -> None:
    move = cursor_move(a_run(flow_type="full_load"), a_source(last_modified_date=None))
    assert (move.before, move.after, move.moves) == (None, NEWEST, True)


def test_a_sold_run_leaves_the_cursor_and_the_landed_versions_alone() -> None:
    move = cursor_move(a_run(flow_type="sold"), a_source())
    assert (move.before, move.after, move.moves) == (CURSOR, CURSOR, False)


def test_the_landed_versions_are_kept_from_the_recorded_allowance_before_the_new_cursor() -> None:
    allowance = timedelta(hours=6)
    move = cursor_move(a_run(lateness_allowance=allowance), a_source(landed_since=None))
    assert move.landed_since == NEWEST - overlap(allowance)


def test_the_landed_versions_mark_never_moves_backwards() -> None:
    later = NEWEST - timedelta(minutes=1)
    move = cursor_move(a_run(), a_source(landed_since=later))
    assert move.landed_since == later
