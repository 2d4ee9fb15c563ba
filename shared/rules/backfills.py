"""Backfills: a bounded range of the past loaded again, in slices, each slice its own run (flow
`backfill`) beside the source's Normal timeline (README, "Backfills").

Everything here is pure: the slices of a range (`BackfillRange`), the slice length an operator
writes (`parse_slice_length`), what a request may ask for (`check_request`), the name of a
slice's execution (`slice_nonce`), and where a backfill stands from the runs of its slices
(`progress`), which the scheduler acts on and `sourceflow backfill list` shows.

A range is [start, end): slice n (from 1) is [start + (n - 1) * length, start + n * length),
the last one cut at the range's end, so the slices cover the range exactly and share no instant.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.errors import PermanentError
from shared.rules.flows import Window, WindowField
from shared.store.runs import OPEN_RUN_STATUSES, RunStatus
from shared.timefmt import isoformat

# More slices than this is a mistake in --slice, not a backfill: a thousand runs of a source.
MAX_SLICES = 1000
# A slice is one run through the state machine; shorter ones cost more than they read.
MIN_SLICE_LENGTH = timedelta(minutes=1)
# A slice whose run failed this many times (since the last `sourceflow backfill retry`) stops
# its backfill: the failure is the source's or the range's, and a person looks at it.
SLICE_ATTEMPTS = 3

_LENGTH = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class InvalidBackfill(PermanentError):
    error_name = "InvalidBackfill"


class BackfillStatus(StrEnum):
    """What people decided of a backfill (`public.backfill.status`, written only by the
    database's functions of migration 0014)."""

    AWAITING_APPROVAL = "awaiting_approval"
    ACTIVE = "active"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class BackfillState(StrEnum):
    """Where a backfill stands: its status, or for an active one, what its slices' runs say."""

    AWAITING_APPROVAL = "awaiting_approval"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    READY = "ready"  # a slice starts at the scheduler's next tick
    RUNNING = "running"  # a slice's run is under way
    SUCCEEDED = "succeeded"  # every slice's run succeeded
    FAILED = "failed"  # a slice failed SLICE_ATTEMPTS times, or its run was cancelled

    @property
    def finished(self) -> bool:
        return self in (BackfillState.REJECTED, BackfillState.CANCELLED, BackfillState.SUCCEEDED)


@dataclass(frozen=True)
class BackfillRange:
    """[start, end) of `field`, in slices of `slice_length`."""

    field: WindowField
    start: datetime
    end: datetime
    slice_length: timedelta

    @classmethod
    def of(cls, backfill: Mapping[str, Any]) -> BackfillRange:
        """A backfill's range from its row (public.backfill)."""
        return cls(
            WindowField(backfill["window_field"]),
            backfill["range_start"],
            backfill["range_end"],
            backfill["slice_length"],
        )

    @property
    def slice_count(self) -> int:
        return -(-(self.end - self.start) // self.slice_length)

    def slice_window(self, number: int) -> Window:
        """Slice `number` (1 to slice_count): its run's window."""
        if not 1 <= number <= self.slice_count:
            raise ValueError(f"slice {number} is not one of 1 to {self.slice_count}")
        start = self.start + (number - 1) * self.slice_length
        end = min(start + self.slice_length, self.end)
        return Window(self.field, start, end, start_inclusive=True, end_exclusive=True)

    def slices(self) -> Iterator[Window]:
        for number in range(1, self.slice_count + 1):
            yield self.slice_window(number)


def parse_slice_length(text: str) -> timedelta:
    """`1d`, `6h`, `30m`, `2w`: a whole number and a unit."""
    match = _LENGTH.match(text)
    if match is None:
        raise InvalidBackfill(
            f"--slice {text!r} is not a length; write a whole number and a unit: m (minutes), "
            "h (hours), d (days) or w (weeks), e.g. 1d or 6h"
        )
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def check_request(source_id: str, wanted: BackfillRange, *, now: datetime) -> BackfillRange:
    """A range a backfill may load: of the past, in at least one slice and at most MAX_SLICES."""
    if wanted.start.tzinfo is None or wanted.end.tzinfo is None:
        raise ValueError("a backfill's range must be timezone-aware")
    what = f"backfill of {source_id!r}"
    if wanted.start >= wanted.end:
        raise InvalidBackfill(
            f"{what}: --from {isoformat(wanted.start)} is not before --to "
            f"{isoformat(wanted.end)}; the range is [from, to)"
        )
    if wanted.end > now:
        raise InvalidBackfill(
            f"{what}: --to {isoformat(wanted.end)} is after now ({isoformat(now)}); a backfill "
            "loads the past (the Normal runs load what is new): give a --to up to now"
        )
    if wanted.slice_length < MIN_SLICE_LENGTH:
        raise InvalidBackfill(
            f"{what}: --slice {wanted.slice_length} is shorter than {MIN_SLICE_LENGTH}; "
            "give a longer one"
        )
    if wanted.slice_count > MAX_SLICES:
        shortest = -(-(wanted.end - wanted.start) // MAX_SLICES)
        raise InvalidBackfill(
            f"{what}: slices of {wanted.slice_length} make {wanted.slice_count} runs, over "
            f"{MAX_SLICES}; give a --slice of at least {shortest} (rounded up to a unit)"
        )
    return wanted


@dataclass(frozen=True)
class SliceRun:
    """What a slice's execution loads: which backfill, as people decided it, and which slice."""

    backfill_id: int
    status: BackfillStatus
    wanted: BackfillRange
    slice_number: int

    @property
    def window(self) -> Window:
        return self.wanted.slice_window(self.slice_number)


def slice_nonce(backfill_id: int, slice_number: int, attempt: int) -> str:
    """The end of the name of a slice's execution: short enough that the name is never cut
    (`shared.runtime.executions`), different for every attempt of every slice."""
    digest = hashlib.sha256(f"{backfill_id}/{slice_number}/{attempt}".encode()).hexdigest()
    return "bf" + digest[:8]


@dataclass(frozen=True)
class SliceAttempt:
    """One execution started for a slice, and its run's status in the ledger (None: its
    execution has not been validated yet)."""

    slice_number: int
    attempt: int
    execution_name: str
    started_at: datetime
    run_status: str | None


@dataclass(frozen=True)
class NextSlice:
    """The slice to start now, and its attempt's number."""

    slice_number: int
    attempt: int


@dataclass(frozen=True)
class Progress:
    state: BackfillState
    slices_done: int
    slice_count: int
    # The newest attempt of the slice under way (or that stopped the backfill).
    current: SliceAttempt | None = None
    # Failed runs of the current slice since the last retry.
    failures: int = 0
    start_next: NextSlice | None = None


_FAILED_RUNS = (RunStatus.FAILED, RunStatus.CANCELLED)


def progress(
    status: BackfillStatus,
    wanted: BackfillRange,
    attempts: Sequence[SliceAttempt],
    *,
    retried_at: datetime | None = None,
) -> Progress:
    """Where a backfill stands, and which slice (if any) to start now. Slices run one at a
    time, in order; a slice whose run was skipped (the source was busy) goes again, one whose
    run failed goes again until SLICE_ATTEMPTS failures since `retried_at`, one whose run an
    operator cancelled stops the backfill."""
    count = wanted.slice_count
    done = {a.slice_number for a in attempts if a.run_status == RunStatus.SUCCEEDED}
    current_number = next(number for number in range(1, len(done) + 2) if number not in done)
    if status is not BackfillStatus.ACTIVE:
        return Progress(BackfillState(status.value), len(done), count)
    if current_number > count:
        return Progress(BackfillState.SUCCEEDED, len(done), count)
    tried = [a for a in attempts if a.slice_number == current_number]
    if not tried:
        return Progress(
            BackfillState.READY, len(done), count, start_next=NextSlice(current_number, 1)
        )
    latest = max(tried, key=lambda a: a.attempt)
    failed = [
        a
        for a in tried
        if a.run_status in _FAILED_RUNS and (retried_at is None or a.started_at >= retried_at)
    ]
    standing = Progress(BackfillState.RUNNING, len(done), count, latest, len(failed))
    if latest.run_status is None or latest.run_status in OPEN_RUN_STATUSES:
        return standing
    if latest in failed and (
        latest.run_status == RunStatus.CANCELLED or len(failed) >= SLICE_ATTEMPTS
    ):
        return Progress(BackfillState.FAILED, len(done), count, latest, len(failed))
    return Progress(
        BackfillState.READY,
        len(done),
        count,
        latest,
        len(failed),
        start_next=NextSlice(current_number, latest.attempt + 1),
    )
