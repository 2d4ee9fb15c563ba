"""`sourceflow audit`: the run ledger proves that a source's windows cover time with no gap.

DESIGN.md, "The data guarantee": a Normal window re-reads the source's lateness allowance (plus
the clock-skew allowance) before the cursor, so a version stamped in one window's tail that
became visible late is read again by the next. The ledger records each run's window and the
allowance it ran with, which is enough to check that promise after the fact:

- Walk the succeeded runs with a last-modified window (Normal, Full Load, Re-specs) in start
  order. For consecutive runs p then r, r's window must start at or before
  `p.window_end - reach`; otherwise the time from there to r's window start is a gap. The
  reach is r's overlap, or less where the runs r re-reads promised less: a version in their
  windows was promised their allowance when it was written, so after a raise r need only
  re-read theirs (and validation holds r's window back to where the landed versions are
  listed, `landed_since`, until the wider overlap has runs behind it).
  A run recorded before migration 0010 has no allowance: it overlaps by nothing, the old rule.
- After the last run L, the next Normal window starts the overlap before the source's current
  cursor, so a cursor after L's window end (edited forward by hand, or ahead of time) leaves
  the time from `L.window_end - overlap` to `cursor - overlap` unread: a gap too. A cursor
  moved forward by hand but still within L's window loses nothing (no record stamped after
  L's newest was visible when L read) and is not a gap: the next run's window would pass the
  same check.
- Backfills reload a range of the past beside that timeline: their windows cover nothing of
  it (a gap stays a gap, whatever a backfill loaded), and their runs, whatever their outcome,
  are never a gap nor part of one's story. The audit lists them apart.

Everything here is pure: the operator's job (`ops.audit`) reads the source and its
ledger rows and passes them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from ops.sources import get_source, unknown_source
from shared.rules.flows import (
    FlowType,
    WindowField,
    moves_cursor,
    overlap,
)
from shared.store.db import Database
from shared.store.runs import RunStatus
from shared.timefmt import isoformat

INACTIVE_SKIP = "SourceInactive"  # validation's Skip reason for a disabled source
LISTED_RUNS = 5  # the most runs a cause names one by one; the rest are counted

# The ledger columns an audit reads (public.source_run).
LEDGER_COLUMNS = (
    "execution_name",
    "status",
    "flow_type",
    "window_field",
    "window_start",
    "window_end",
    "window_start_inclusive",
    "lateness_allowance",
    "records",
    "late_records",
    "duplicates_skipped",
    "future_records",
    "cursor_before",
    "cursor_after",
    "error",
    "started_at",
)


@dataclass(frozen=True)
class LedgerRun:
    """One row of the run ledger, as much of it as an audit reads."""

    execution_name: str
    status: str
    started_at: datetime
    flow_type: str | None = None
    window_field: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    window_start_inclusive: bool | None = None
    lateness_allowance: timedelta | None = None
    records: int | None = None
    late_records: int | None = None
    duplicates_skipped: int | None = None
    future_records: int | None = None
    cursor_before: datetime | None = None
    cursor_after: datetime | None = None
    error: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LedgerRun:
        return cls(**{column: row[column] for column in LEDGER_COLUMNS})

    @property
    def audited(self) -> bool:
        """A succeeded run whose window the cursor follows: Normal, Full Load, Re-specs."""
        return (
            self.status == RunStatus.SUCCEEDED
            and self.window_field == WindowField.LAST_MODIFIED
            and self.flow_type is not None
            and moves_cursor(FlowType(self.flow_type))
            and self.window_start is not None
            and self.window_end is not None
        )

    @property
    def backfill(self) -> bool:
        """A backfill's slice run: beside the Normal timeline."""
        return self.flow_type == FlowType.BACKFILL

    @property
    def overlap(self) -> timedelta:
        """How far before its cursor the run's window started: nothing before the allowance
        existed (migration 0010), else the allowance plus the clock-skew allowance."""
        if self.lateness_allowance is None:
            return timedelta(0)
        return overlap(self.lateness_allowance)

    @property
    def start(self) -> datetime:
        assert self.window_start is not None, self.execution_name
        return self.window_start

    @property
    def end(self) -> datetime:
        assert self.window_end is not None, self.execution_name
        return self.window_end

    def as_json(self) -> dict[str, Any]:
        allowance = self.lateness_allowance
        return {
            "execution_name": self.execution_name,
            "flow_type": self.flow_type,
            "status": self.status,
            "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end),
            "window_start_inclusive": self.window_start_inclusive,
            "lateness_allowance_seconds": None if allowance is None else allowance.total_seconds(),
            "records": self.records,
            "late_records": self.late_records,
            "duplicates_skipped": self.duplicates_skipped,
            "future_records": self.future_records,
            "cursor_before": _iso(self.cursor_before),
            "cursor_after": _iso(self.cursor_after),
            "started_at": _iso(self.started_at),
        }


@dataclass(frozen=True)
class Gap:
    """Time no window read: stamps in (start, end] that became visible late were never loaded.
    `before` is the run whose window should have reached further, `after` the run whose window
    started too late (None: the next run, from the source's current cursor)."""

    start: datetime
    end: datetime
    before: str | None
    after: str | None
    causes: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "start": isoformat(self.start),
            "end": isoformat(self.end),
            "before": self.before,
            "after": self.after,
            "causes": list(self.causes),
        }


@dataclass(frozen=True)
class Audit:
    source_id: str
    cursor: datetime | None
    runs: tuple[LedgerRun, ...]  # the audited runs, in start order
    gaps: tuple[Gap, ...]
    # The backfills' slice runs, in start order: beside the timeline, not part of its proof.
    backfills: tuple[LedgerRun, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "cursor": _iso(self.cursor),
            "runs": [run.as_json() for run in self.runs],
            "gaps": [gap.as_json() for gap in self.gaps],
            "backfills": [run.as_json() for run in self.backfills],
        }


def audit(
    source_id: str,
    ledger: Iterable[LedgerRun],
    *,
    cursor: datetime | None,
    lateness_allowance: timedelta | None,
    since: datetime | None = None,
) -> Audit:
    """Check the source's ledger rows (any status) against the coverage rule.

    `cursor` and `lateness_allowance` are the source's now: where its next Normal window starts
    from, and with what overlap. With `since`, only runs started at or after it count, and the
    first of them is the baseline (no gap before it).
    """
    in_period = sorted(
        (row for row in ledger if since is None or row.started_at >= since),
        key=_order,
    )
    rows = [row for row in in_period if not row.backfill]
    runs = [row for row in rows if row.audited]
    gaps: list[Gap] = []
    for index, (previous, current) in enumerate(pairwise(runs), start=1):
        reached = previous.end - _reach(runs[:index], current)
        if current.start > reached:
            between = _between(rows, previous, current)
            causes = _pair_causes(previous, current) + _context(between, "between them")
            gaps.append(
                Gap(reached, current.start, previous.execution_name, current.execution_name, causes)
            )
    if runs and cursor is not None and cursor > runs[-1].end:
        last = runs[-1]
        ahead = overlap(lateness_allowance) if lateness_allowance is not None else timedelta(0)
        since_last = _between(rows, last, None)
        causes = _cursor_causes(last, cursor) + _context(since_last, f"since {last.execution_name}")
        gaps.append(Gap(last.end - ahead, cursor - ahead, last.execution_name, None, causes))
    backfills = tuple(row for row in in_period if row.backfill)
    return Audit(source_id, cursor, tuple(runs), tuple(gaps), backfills)


def _reach(earlier: Sequence[LedgerRun], current: LedgerRun) -> timedelta:
    """How far before the previous window's end `current` must start: its overlap, or the
    smallest overlap among the earlier runs whose windows it re-reads, if that is less. Runs
    from before the allowance existed promised nothing and relax nothing: the first window
    after them that does not re-read their tails is a gap, named as theirs."""
    promised = [
        run.overlap
        for run in earlier
        if run.end > current.start and run.lateness_allowance is not None
    ]
    return min([current.overlap, *promised])


def _between(
    rows: Sequence[LedgerRun], previous: LedgerRun, current: LedgerRun | None
) -> list[LedgerRun]:
    """The runs not audited that started after `previous` and before `current` (or since)."""
    return [
        row
        for row in rows
        if not row.audited
        and _order(row) > _order(previous)
        and (current is None or _order(row) < _order(current))
    ]


def _order(run: LedgerRun) -> tuple[datetime, str]:
    return (run.started_at, run.execution_name)


def _pair_causes(previous: LedgerRun, current: LedgerRun) -> tuple[str, ...]:
    p, r = previous.execution_name, current.execution_name
    causes = []
    if current.cursor_before != previous.cursor_after:
        causes.append(
            f"the cursor was edited by hand between {p} and {r}: "
            f"{_iso(previous.cursor_after)} → {_iso(current.cursor_before)}"
        )
    if current.cursor_before is not None and current.cursor_before > current.end:
        causes.append(
            f"cursor ahead of time: {isoformat(current.cursor_before)} is after {r}'s own "
            f"start ({isoformat(current.end)}), so its window was empty"
        )
    if current.flow_type == FlowType.FULL_LOAD:
        causes.append(
            f"a Full Load detour: {r}'s window is backdated from its own start, to "
            f"{isoformat(current.start)}, not from the cursor"
        )
    if previous.lateness_allowance is None or current.lateness_allowance is None:
        old = [run.execution_name for run in (previous, current) if run.lateness_allowance is None]
        causes.append(
            f"{' and '.join(old)} ran before the lateness allowance existed: "
            f"{r}'s window starts at the cursor {p} left, re-reading nothing before it"
        )
    if not causes:
        causes.append(
            f"no cause in the ledger: {r}'s window starts at {isoformat(current.start)}, "
            f"after {p}'s window end less {r}'s overlap ({current.overlap})"
        )
    return tuple(causes)


def _cursor_causes(last: LedgerRun, cursor: datetime) -> tuple[str, ...]:
    causes = []
    if cursor != last.cursor_after:
        causes.append(
            f"the cursor was edited by hand after {last.execution_name}: "
            f"{_iso(last.cursor_after)} → {isoformat(cursor)}"
        )
    causes.append(
        f"cursor ahead of time: {isoformat(cursor)} is after the last window's end "
        f"({isoformat(last.end)}); the next Normal window starts after time no run read"
    )
    return tuple(causes)


def _context(between: Sequence[LedgerRun], where: str) -> tuple[str, ...]:
    """What else happened between the two runs: not a gap by itself, but what the operator
    looks at next."""
    disabled = [
        run for run in between if run.status == RunStatus.SKIPPED and run.error == INACTIVE_SKIP
    ]
    causes = []
    if disabled:
        causes.append(
            f"the source was disabled: {len(disabled)} run(s) skipped as {INACTIVE_SKIP} "
            f"from {isoformat(disabled[0].started_at)} to {isoformat(disabled[-1].started_at)}"
        )
    for status in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.SKIPPED):
        ended = [run for run in between if run.status == status and run not in disabled]
        if ended:
            causes.append(f"{status} runs {where}: {_named(ended, with_error=True)}")
    sold = [run for run in between if run.status == RunStatus.SUCCEEDED and not run.audited]
    if sold:
        causes.append(f"Sold runs {where} (they leave the cursor): {_named(sold)}")
    return tuple(causes)


def _named(runs: Sequence[LedgerRun], *, with_error: bool = False) -> str:
    named = [
        f"{run.execution_name} ({run.error or 'no error recorded'})"
        if with_error
        else run.execution_name
        for run in runs[:LISTED_RUNS]
    ]
    more = len(runs) - LISTED_RUNS
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else isoformat(moment)


def audit_source(db: Database, source_id: str, *, since: datetime | None = None) -> Audit:
    """Whether the source's successful windows cover time with no gap (ops.audit)."""
    # The source first, then its ledger: a run that ends in between is then audited with a
    # cursor from before it moved, which it covers, rather than the other way round.
    source = get_source(db, source_id)
    if source is None:
        raise unknown_source(source_id)
    with db.transaction() as cur:
        cur.execute(
            f"""
            SELECT {", ".join(LEDGER_COLUMNS)} FROM public.source_run
             WHERE source_id = %(source)s
               AND (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)
            """,
            {"source": source_id, "since": since},
        )
        ledger = [LedgerRun.from_row(row) for row in cur.fetchall()]
    return audit(
        source_id,
        ledger,
        cursor=source["last_modified_date"],
        lateness_allowance=source["lateness_allowance"],
        since=since,
    )
