"""ops.audit: the ledger shows whether a source's windows cover time with no gap.

Histories are written by `Ledger`, which plans each run's window and moves the cursor with the
same shared.rules.flows rules validation and unlocking use, so a history the services could write is
audited as they would have written it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from ops.audit import LISTED_RUNS, Audit, Gap, LedgerRun, audit
from shared.rules.flows import (
    DEFAULT_LATENESS_ALLOWANCE,
    FlowParams,
    FlowType,
    advance_cursor,
    landed_since_after,
    moves_cursor,
    overlap,
    plan_window,
)

T0 = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
ALLOWANCE = DEFAULT_LATENESS_ALLOWANCE
OVERLAP = overlap(ALLOWANCE)


@dataclass
class Ledger:
    """A source and its run ledger, written as validation and unlocking write them."""

    cursor: datetime | None = None
    landed_since: datetime | None = None
    allowance: timedelta | None = ALLOWANCE  # None: before migration 0010
    backdate_days: int = 30
    rows: list[LedgerRun] = field(default_factory=list)

    def run(
        self, at: datetime, *, newest: datetime | None = None, flow: FlowType = FlowType.NORMAL
    ) -> LedgerRun:
        """A succeeded run started at `at` whose newest record was stamped `newest`."""
        window = plan_window(
            "s",
            FlowParams(flow),
            cursor=self.cursor,
            run_start=at,
            backdate_days=self.backdate_days,
            lateness_allowance=self.allowance or timedelta(0),
            # Before migration 0010, a Normal window started at the cursor.
            landed_since=self.cursor if self.allowance is None else self.landed_since,
        )
        cursor_before = self.cursor
        if moves_cursor(flow):
            self.cursor = advance_cursor(self.cursor, newest)
            if self.allowance is not None:
                self.landed_since = landed_since_after(
                    self.landed_since, self.cursor, self.allowance
                )
        return self._write(
            LedgerRun(
                execution_name=f"s-{len(self.rows):03d}",
                status="succeeded",
                started_at=at,
                flow_type=flow.value,
                window_field=window.field.value,
                window_start=window.start,
                window_end=window.end,
                window_start_inclusive=window.start_inclusive,
                lateness_allowance=self.allowance,
                records=1 if newest else 0,
                late_records=0,
                duplicates_skipped=0,
                future_records=0,
                cursor_before=cursor_before,
                cursor_after=self.cursor,
            )
        )

    def backfill(
        self, at: datetime, start: datetime, end: datetime, status: str = "succeeded"
    ) -> LedgerRun:
        """A backfill's slice run, of [start, end): the cursor stays."""
        return self._write(
            LedgerRun(
                execution_name=f"s-{len(self.rows):03d}",
                status=status,
                started_at=at,
                flow_type=FlowType.BACKFILL.value,
                window_field="last_modified",
                window_start=start,
                window_end=end,
                window_start_inclusive=True,
                lateness_allowance=self.allowance,
                records=3,
                cursor_before=self.cursor,
                cursor_after=self.cursor,
                error=None if status == "succeeded" else "SourceUnavailable",
            )
        )

    def end(self, at: datetime, status: str, error: str) -> LedgerRun:
        """A run that failed, was cancelled or was skipped: the cursor stays."""
        return self._write(LedgerRun(f"s-{len(self.rows):03d}", status, started_at=at, error=error))

    def edit_cursor(self, to: datetime | None) -> None:
        """What an operator does by hand: UPDATE public.source SET last_modified_date."""
        self.cursor = to

    def audit(self, *, since: datetime | None = None) -> Audit:
        return audit(
            "s", self.rows, cursor=self.cursor, lateness_allowance=self.allowance, since=since
        )

    def _write(self, row: LedgerRun) -> LedgerRun:
        self.rows.append(row)
        return row


def a_history(runs: int = 5, every: timedelta = 5 * MINUTE) -> Ledger:
    """A Full Load at T0, then Normal runs every `every`, each loading a record stamped just
    before it started."""
    ledger = Ledger()
    ledger.run(T0, newest=T0 - MINUTE, flow=FlowType.FULL_LOAD)
    for index in range(1, runs):
        at = T0 + index * every
        ledger.run(at, newest=at - timedelta(seconds=1))
    return ledger


def only_gap(ledger: Ledger, *, since: datetime | None = None) -> Gap:
    [gap] = ledger.audit(since=since).gaps
    return gap


# -- whole histories ------------------------------------------------------------------------


def test_back_to_back_normal_runs_after_a_full_load_cover_time_with_no_gap() -> None:
    ledger = a_history(runs=20, every=MINUTE)
    audited = ledger.audit()
    assert audited.gaps == ()
    assert [run.execution_name for run in audited.runs] == [
        row.execution_name for row in ledger.rows
    ]
    assert audited.runs[0].flow_type == "full_load"
    # (each Normal window reaches back the overlap before the previous window's end)
    for previous, current in pairwise(audited.runs):
        assert current.window_start is not None and previous.window_end is not None
        assert current.window_start <= previous.window_end - OVERLAP


def test_runs_that_load_nothing_new_keep_covering() -> None:
    ledger = a_history(runs=2)
    for hours in range(1, 6):
        ledger.run(T0 + hours * HOUR)  # nothing new: the cursor stays, the windows widen
    assert ledger.audit().gaps == ()


def test_the_ledger_order_does_not_matter() -> None:
    ledger = a_history(runs=6)
    ledger.rows.reverse()
    assert ledger.audit().gaps == ()
    assert [run.execution_name for run in ledger.audit().runs] == [f"s-{i:03d}" for i in range(6)]


def test_a_source_with_no_succeeded_runs_has_nothing_to_audit() -> None:
    ledger = Ledger()
    ledger.end(T0, "failed", "SourceUnavailable")
    audited = ledger.audit()
    assert (audited.runs, audited.gaps, audited.cursor) == ((), (), None)
    assert audited.as_json() == {
        "source_id": "s",
        "cursor": None,
        "runs": [],
        "gaps": [],
        "backfills": [],
    }


def test_the_json_names_each_run_and_gap_with_utc_timestamps() -> None:
    ledger = a_history(runs=2)
    ledger.edit_cursor(T0 + 2 * HOUR)
    document = ledger.audit().as_json()
    assert document["source_id"] == "s"
    assert document["cursor"] == "2026-11-01T08:00:00Z"
    assert document["runs"][1] == {
        "execution_name": "s-001",
        "flow_type": "normal",
        "status": "succeeded",
        "window_start": "2026-11-01T05:46:59Z",
        "window_end": "2026-11-01T06:05:00Z",
        "window_start_inclusive": False,
        "lateness_allowance_seconds": 600.0,
        "records": 1,
        "late_records": 0,
        "duplicates_skipped": 0,
        "future_records": 0,
        "cursor_before": "2026-11-01T05:59:00Z",
        "cursor_after": "2026-11-01T06:04:59Z",
        "started_at": "2026-11-01T06:05:00Z",
    }
    [gap] = document["gaps"]
    assert (gap["start"], gap["end"], gap["before"], gap["after"]) == (
        "2026-11-01T05:52:59Z",
        "2026-11-01T07:47:59Z",
        "s-001",
        None,
    )
    assert isinstance(gap["causes"], list) and gap["causes"]


# -- the cursor edited by hand --------------------------------------------------------------


def test_a_cursor_edited_forward_between_two_runs_is_a_gap_naming_both_runs() -> None:
    # Given two runs, then the cursor moved forward by an hour by hand, then a third run
    ledger = a_history(runs=2)
    previous = ledger.rows[-1]
    ledger.edit_cursor(T0 + HOUR)
    current = ledger.run(T0 + 2 * HOUR, newest=T0 + 2 * HOUR - MINUTE)

    # When the ledger is audited
    gap = only_gap(ledger)

    # Then the gap runs from where the previous window's overlap ends to the late start
    assert previous.window_end is not None
    assert (gap.start, gap.end) == (previous.window_end - OVERLAP, T0 + HOUR - OVERLAP)
    assert (gap.before, gap.after) == (previous.execution_name, current.execution_name)
    assert gap.causes == (
        "the cursor was edited by hand between s-001 and s-002: "
        "2026-11-01T06:04:59Z → 2026-11-01T07:00:00Z",
    )


def test_a_cursor_edited_back_by_hand_is_a_reload_not_a_gap() -> None:
    ledger = a_history(runs=3)
    ledger.edit_cursor(T0 - 3 * HOUR)
    ledger.run(T0 + HOUR, newest=T0 + HOUR - MINUTE)
    assert ledger.audit().gaps == ()


def test_a_cursor_edited_forward_within_the_last_window_loses_nothing() -> None:
    # Given the last run loaded nothing after 06:05, and its window ended at 06:20
    ledger = a_history(runs=2)
    ledger.run(T0 + 20 * MINUTE)
    # When the cursor is moved to 06:15 by hand: no record stamped after 06:05 was visible
    # when that run read, and the next window starts the overlap before 06:15
    ledger.edit_cursor(T0 + 15 * MINUTE)
    # Then there is no gap now, and none after the next run either
    assert ledger.audit().gaps == ()
    ledger.run(T0 + 25 * MINUTE)
    assert ledger.audit().gaps == ()


def test_a_cursor_after_the_last_window_end_is_a_gap_ahead_of_time() -> None:
    # Given a last run whose window ended at 06:05, and the cursor set to a week ahead by hand
    ledger = a_history(runs=2)
    last = ledger.rows[-1]
    ahead = T0 + timedelta(days=7)
    ledger.edit_cursor(ahead)

    # Then the next window would start the overlap before a cursor no run reached
    gap = only_gap(ledger)
    assert (gap.start, gap.end) == (T0 + 5 * MINUTE - OVERLAP, ahead - OVERLAP)
    assert (gap.before, gap.after) == (last.execution_name, None)
    assert gap.causes == (
        "the cursor was edited by hand after s-001: 2026-11-01T06:04:59Z → 2026-11-08T06:00:00Z",
        "cursor ahead of time: 2026-11-08T06:00:00Z is after the last window's end "
        "(2026-11-01T06:05:00Z); the next Normal window starts after time no run read",
    )


def test_runs_from_a_cursor_ahead_of_time_keep_the_gap_open() -> None:
    # Given the cursor set a week ahead, then two Normal runs (empty windows at their start)
    ledger = Ledger()
    ledger.run(T0, newest=T0 - MINUTE, flow=FlowType.FULL_LOAD)
    ledger.edit_cursor(T0 + timedelta(days=7))
    ledger.run(T0 + HOUR)
    ledger.run(T0 + 2 * HOUR)

    # Then each of them starts after time no run read, and the cursor is still ahead
    first, second, trailing = ledger.audit().gaps
    assert [(gap.before, gap.after) for gap in (first, second, trailing)] == [
        ("s-000", "s-001"),
        ("s-001", "s-002"),
        ("s-002", None),
    ]
    assert first.causes == (
        "the cursor was edited by hand between s-000 and s-001: "
        "2026-11-01T05:59:00Z → 2026-11-08T06:00:00Z",
        "cursor ahead of time: 2026-11-08T06:00:00Z is after s-001's own start "
        "(2026-11-01T07:00:00Z), so its window was empty",
    )
    assert second.causes == (
        "cursor ahead of time: 2026-11-08T06:00:00Z is after s-002's own start "
        "(2026-11-01T08:00:00Z), so its window was empty",
    )
    assert trailing.causes == (
        "cursor ahead of time: 2026-11-08T06:00:00Z is after the last window's end "
        "(2026-11-01T08:00:00Z); the next Normal window starts after time no run read",
    )


# -- detours, failures, a disabled source ----------------------------------------------------


def test_a_full_load_that_does_not_reach_back_to_the_last_window_is_a_gap() -> None:
    # Given a source last run in March, then a 30-day Full Load in November
    ledger = Ledger()
    ledger.run(T0 - timedelta(days=240), newest=T0 - timedelta(days=241), flow=FlowType.FULL_LOAD)
    full_load = ledger.run(T0, newest=T0 - MINUTE, flow=FlowType.FULL_LOAD)

    gap = only_gap(ledger)
    assert (gap.end, gap.after) == (T0 - timedelta(days=30), full_load.execution_name)
    assert gap.causes == (
        "a Full Load detour: s-001's window is backdated from its own start, to "
        "2026-10-02T06:00:00Z, not from the cursor",
    )


def test_a_full_load_or_respecs_that_reaches_back_covers() -> None:
    ledger = a_history(runs=3)
    ledger.run(T0 + HOUR, newest=T0 + HOUR - MINUTE, flow=FlowType.FULL_LOAD)
    ledger.run(T0 + 2 * HOUR, newest=T0 + 2 * HOUR - MINUTE)
    ledger.run(T0 + 3 * HOUR, flow=FlowType.RESPECS)
    ledger.run(T0 + 4 * HOUR)
    assert ledger.audit().gaps == ()


def test_sold_runs_do_not_count_and_are_named_beside_a_gap() -> None:
    # Given Sold runs (a detour that leaves the cursor) and then a hand edit
    ledger = a_history(runs=2)
    sold = ledger.run(T0 + HOUR, flow=FlowType.SOLD)
    ledger.edit_cursor(T0 + 2 * HOUR)
    ledger.run(T0 + 3 * HOUR)

    audited = ledger.audit()
    assert sold.execution_name not in [run.execution_name for run in audited.runs]
    [gap] = audited.gaps
    assert gap.causes[-1] == "Sold runs between them (they leave the cursor): s-002"


def test_a_backfill_over_a_gap_does_not_close_it_and_is_listed_apart() -> None:
    # Given a gap (the cursor edited an hour forward) and a backfill that loaded that hour again
    ledger = a_history(runs=2)
    ledger.edit_cursor(T0 + HOUR)
    reload = ledger.backfill(T0 + 90 * MINUTE, T0 - HOUR, T0 + 2 * HOUR)
    ledger.run(T0 + 2 * HOUR)

    audited = ledger.audit()

    # Then the gap is still there, and the backfill is neither a covering run nor its story
    [gap] = audited.gaps
    assert gap.causes == (
        "the cursor was edited by hand between s-001 and s-003: "
        "2026-11-01T06:04:59Z → 2026-11-01T07:00:00Z",
    )
    assert reload.execution_name not in [run.execution_name for run in audited.runs]
    assert audited.backfills == (reload,)
    assert audited.as_json()["backfills"][0]["flow_type"] == "backfill"


def test_backfills_of_any_outcome_between_runs_are_no_gap() -> None:
    # Given backfill slices that succeeded, failed and were cancelled between Normal runs
    ledger = a_history(runs=2)
    ledger.backfill(T0 + 6 * MINUTE, T0 - 30 * HOUR, T0 - 29 * HOUR)
    ledger.backfill(T0 + 7 * MINUTE, T0 - 29 * HOUR, T0 - 28 * HOUR, status="failed")
    ledger.backfill(T0 + 8 * MINUTE, T0 - 29 * HOUR, T0 - 28 * HOUR, status="cancelled")
    ledger.run(T0 + 10 * MINUTE, newest=T0 + 9 * MINUTE)
    # Then the Normal runs still cover time, and the audit lists the three slices apart
    audited = ledger.audit()
    assert audited.gaps == ()
    assert [run.status for run in audited.backfills] == ["succeeded", "failed", "cancelled"]
    assert [run.flow_type for run in audited.runs] == ["full_load", "normal", "normal"]


def test_a_gap_names_no_backfill_among_what_happened_between_its_runs() -> None:
    ledger = a_history(runs=2)
    ledger.backfill(T0 + 6 * MINUTE, T0 - 30 * HOUR, T0 - 29 * HOUR, status="failed")
    ledger.end(T0 + 7 * MINUTE, "failed", "SourceUnavailable")
    ledger.edit_cursor(T0 + HOUR)
    ledger.run(T0 + 2 * HOUR)
    gap = only_gap(ledger)
    assert gap.causes[1:] == ("failed runs between them: s-003 (SourceUnavailable)",)


def test_failed_cancelled_and_skipped_runs_alone_leave_no_gap() -> None:
    ledger = a_history(runs=2)
    ledger.end(T0 + 10 * MINUTE, "failed", "SourceUnavailable")
    ledger.end(T0 + 15 * MINUTE, "cancelled", "RunCancelled")
    ledger.end(T0 + 20 * MINUTE, "skipped", "SourceLocked")
    ledger.run(T0 + 25 * MINUTE, newest=T0 + 24 * MINUTE)
    assert ledger.audit().gaps == ()


def test_a_gap_lists_the_failed_cancelled_and_skipped_runs_between_its_runs() -> None:
    # Given failures between two runs, and the cursor edited forward meanwhile
    ledger = a_history(runs=2)
    ledger.end(T0 + 10 * MINUTE, "failed", "SourceUnavailable")
    ledger.end(T0 + 15 * MINUTE, "cancelled", "RunCancelled")
    ledger.end(T0 + 20 * MINUTE, "skipped", "SourceLocked")
    ledger.end(T0 + 30 * MINUTE, "failed", "States.Timeout")
    ledger.edit_cursor(T0 + HOUR)
    ledger.run(T0 + 2 * HOUR)

    gap = only_gap(ledger)
    assert gap.causes[1:] == (
        "failed runs between them: s-002 (SourceUnavailable), s-005 (States.Timeout)",
        "cancelled runs between them: s-003 (RunCancelled)",
        "skipped runs between them: s-004 (SourceLocked)",
    )


def test_a_disabled_source_is_named_with_how_long_it_was_skipped() -> None:
    # Given the source disabled for three ticks, then its cursor moved to now by hand
    ledger = a_history(runs=2)
    for hours in (1, 2, 3):
        ledger.end(T0 + hours * HOUR, "skipped", "SourceInactive")
    ledger.edit_cursor(T0 + 4 * HOUR)
    ledger.run(T0 + 4 * HOUR)

    gap = only_gap(ledger)
    assert gap.causes[1] == (
        "the source was disabled: 3 run(s) skipped as SourceInactive from "
        "2026-11-01T07:00:00Z to 2026-11-01T09:00:00Z"
    )


def test_a_long_list_of_runs_between_is_cut_short_with_a_count() -> None:
    ledger = a_history(runs=2)
    for minutes in range(10, 10 + LISTED_RUNS + 3):
        ledger.end(T0 + minutes * MINUTE, "failed", "SourceUnavailable")
    ledger.edit_cursor(T0 + HOUR)
    ledger.run(T0 + 2 * HOUR)
    assert only_gap(ledger).causes[1].endswith(" and 3 more")


def test_runs_after_the_last_one_are_named_beside_a_cursor_ahead_of_time() -> None:
    ledger = a_history(runs=2)
    ledger.end(T0 + HOUR, "failed", "SourceUnavailable")
    ledger.edit_cursor(T0 + timedelta(days=1))
    assert only_gap(ledger).causes[-1] == "failed runs since s-001: s-002 (SourceUnavailable)"


# -- the allowance --------------------------------------------------------------------------


def test_runs_from_before_the_allowance_overlap_by_nothing_and_cover() -> None:
    ledger = Ledger(allowance=None)
    ledger.run(T0, newest=T0 - MINUTE, flow=FlowType.FULL_LOAD)
    for index in range(1, 5):
        at = T0 + index * 5 * MINUTE
        ledger.run(at, newest=at - timedelta(seconds=1))
    assert ledger.audit().gaps == ()
    assert {run.as_json()["lateness_allowance_seconds"] for run in ledger.audit().runs} == {None}


def test_the_first_run_with_an_allowance_after_old_runs_is_a_gap_naming_them() -> None:
    # Given runs from before migration 0010, which set landed_since to the cursor
    ledger = Ledger(allowance=None)
    ledger.run(T0, newest=T0 - MINUTE, flow=FlowType.FULL_LOAD)
    old = ledger.run(T0 + 5 * MINUTE, newest=T0 + 5 * MINUTE - timedelta(seconds=1))
    ledger.allowance, ledger.landed_since = ALLOWANCE, ledger.cursor
    # When the first run with the allowance starts at that cursor
    new = ledger.run(T0 + 10 * MINUTE)

    # Then the old run's tail was never re-read
    gap = only_gap(ledger)
    assert (gap.before, gap.after) == (old.execution_name, new.execution_name)
    assert (gap.start, gap.end) == (
        T0 + 5 * MINUTE - OVERLAP,
        T0 + 5 * MINUTE - timedelta(seconds=1),
    )
    assert gap.causes == (
        "s-001 ran before the lateness allowance existed: s-002's window starts at the cursor "
        "s-001 left, re-reading nothing before it",
    )


def test_a_raised_allowance_is_no_gap_while_the_overlap_grows() -> None:
    # Given runs a minute apart with an allowance of 0, then the allowance raised to 10 min:
    # validation holds each window back to where the landed versions are listed, so the
    # overlap grows run by run (found by the property tests: the audit called that a gap)
    ledger = Ledger(allowance=timedelta(0))
    ledger.run(T0, newest=T0 - MINUTE, flow=FlowType.FULL_LOAD)
    ledger.allowance = ALLOWANCE
    for index in range(1, 20):
        at = T0 + index * MINUTE
        ledger.run(at, newest=at - timedelta(seconds=1))
    # Then the windows re-read what the runs before them promised: no gap
    assert ledger.audit().gaps == ()
    # And once the wider overlap has runs behind it, a window starting late is a gap again
    last = ledger.rows[-1]
    assert last.window_start is not None and last.cursor_before is not None
    assert last.window_start == last.cursor_before - OVERLAP
    ledger.rows[-1] = replace(last, window_start=last.window_start + MINUTE)
    assert len(ledger.audit().gaps) == 1


def test_a_gap_with_no_cause_in_the_ledger_says_so() -> None:
    # Given a window that starts late though nothing in the ledger explains it
    ledger = a_history(runs=3)
    last = ledger.rows[-1]
    assert last.window_start is not None
    ledger.rows[-1] = replace(last, window_start=last.window_start + HOUR)

    [cause] = only_gap(ledger).causes
    assert cause.startswith("no cause in the ledger: s-002's window starts at ")


# -- since ----------------------------------------------------------------------------------


def test_since_audits_the_runs_started_from_then_with_the_first_as_baseline() -> None:
    # Given a hand edit between the second and third runs, then whole windows
    ledger = a_history(runs=2)
    ledger.edit_cursor(T0 + HOUR)
    for hours in (2, 3, 4):
        ledger.run(T0 + hours * HOUR, newest=T0 + hours * HOUR - MINUTE)
    assert len(ledger.audit().gaps) == 1

    # When audited since the third run started, Then that run is the baseline: no gap
    since = ledger.audit(since=T0 + 2 * HOUR)
    assert since.gaps == ()
    assert [run.execution_name for run in since.runs] == ["s-002", "s-003", "s-004"]

    # And since a moment before it, the gap is found again
    assert only_gap(ledger, since=T0 + MINUTE).after == "s-002"


def test_since_after_every_run_has_nothing_to_audit() -> None:
    ledger = a_history(runs=3)
    ledger.edit_cursor(T0 + timedelta(days=7))
    audited = ledger.audit(since=T0 + HOUR)
    assert (audited.runs, audited.gaps) == ((), ())
