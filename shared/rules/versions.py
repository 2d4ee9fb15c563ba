"""Record versions: what a run lands, skips, counts and remembers (DESIGN.md, "The data
guarantee").

A record version is a record's key and its last-modified stamp. Normal windows overlap by the
lateness allowance, so a run meets again versions that an earlier run landed; it skips them
(`duplicates_skipped`), so that the raw zone holds each version once across Normal runs. What it
lands only thanks to the overlap (stamped at or before the cursor it started from) is counted as
`late_records`. A version stamped beyond the window's end plus the clock-skew allowance is
future-dated: counted, landed once, and never followed by the cursor; one stamped within the
skew allowance after the end waits for a later window.

Everything here is pure: `VersionFilter` takes the versions already landed and the run's
window, and decides record by record.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from shared.rules.flows import StampPosition, Window, stamp_position
from shared.timefmt import isoformat

# A run counts every future-dated version, and describes the first few in its manifest.
FUTURE_EXAMPLES = 5
# What a run counts of the versions it met, by these names in the ledger, the download and
# unlocking results, the manifest and the Run Succeeded event.
VERSION_COUNTS = ("late_records", "duplicates_skipped", "future_records")
_DIGEST_BYTES = 16


class MissingKey(ValueError):
    """A record without the key its source names; its text says which."""


def key_digest(record: Mapping[str, Any], key_field: str | None) -> bytes:
    """The identity of a record (without its stamp): its key's value, or, for a source without a
    key, the whole record, so that any change makes another version."""
    if key_field is None:
        payload = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    else:
        value = record.get(key_field)
        if value is None or value == "":
            raise MissingKey(f"has no {key_field} (the source's record key)")
        payload = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(payload, digest_size=_DIGEST_BYTES).digest()


Version = tuple[datetime, bytes]  # (last-modified stamp, key digest)


@dataclass
class LandingCounts:
    late_records: int = 0
    duplicates_skipped: int = 0
    future_records: int = 0
    # Stamped after the window's end, within the skew allowance: left for a later window.
    waiting_records: int = 0
    future_examples: list[str] = field(default_factory=list)


@dataclass
class VersionFilter:
    """Decides which versions a run lands, and remembers the ones a later window may meet.

    `landed` are the versions earlier runs landed with stamps after the window's start; with
    `dedupe` off (explicit reloads: Full Load, Re-specs) they are landed again all the same.
    `cursor_before` is the cursor the run started from (None: no late-record counting).
    `overlap` is how far before the cursor the next Normal window will start; only versions
    within it of the newest stamp, and future-dated ones, need remembering, which bounds memory
    by the source's rate of change rather than by the window's size.

    A download continued in a later invocation (or redelivered) builds its filter again from
    what it committed: `counts` and `newest` as they were, and `own`, the versions it listed
    (`take_unsaved`) with its parts, which it has landed already.
    """

    window: Window
    overlap: timedelta
    landed: Collection[Version] = frozenset()
    dedupe: bool = True
    cursor_before: datetime | None = None
    counts: LandingCounts = field(default_factory=LandingCounts)
    # The newest stamp inside the window: where the cursor may move.
    newest: datetime | None = None
    own: Collection[Version] = frozenset()
    _recent: dict[Version, None] = field(default_factory=dict, repr=False)
    _recent_by_stamp: list[Version] = field(default_factory=list, repr=False)
    _future: dict[Version, None] = field(default_factory=dict, repr=False)
    # The remembered versions not yet taken to be listed (`take_unsaved`).
    _unsaved: dict[Version, None] = field(default_factory=dict, repr=False)

    def admit(self, stamp: datetime, digest: bytes) -> bool:
        """Whether the version lands; counts it either way."""
        if not self.window.reads_past_end and not self.window.contains(stamp):
            # A bounded window (a backfill slice) lands its own range only, even from a source
            # that ignores the bound it was asked for.
            return False
        version = (stamp, digest)
        position = stamp_position(self.window.end, stamp)
        if position is StampPosition.WAITING:
            self.counts.waiting_records += 1
            return False
        if position is StampPosition.FUTURE:
            self.counts.future_records += 1
            if len(self.counts.future_examples) < FUTURE_EXAMPLES:
                self.counts.future_examples.append(
                    f"last modified {isoformat(stamp)}, after the window's end "
                    f"{isoformat(self.window.end)}"
                )
        elif self.newest is None or stamp > self.newest:
            self.newest = stamp
        if self._seen(version):
            self.counts.duplicates_skipped += 1
            return False
        if (
            position is StampPosition.IN_WINDOW
            and self.cursor_before is not None
            and stamp <= self.cursor_before
        ):
            self.counts.late_records += 1
        self._remember(version, position)
        return True

    def remembered(self) -> list[Version]:
        """The versions this run landed that a later Normal window may read again."""
        self._forget_old()
        return [*self._recent, *self._future]

    def take_unsaved(self) -> list[Version]:
        """The remembered versions landed since the last call: a download lists them with each
        part it commits, so that a continued download knows them (`own`) as this invocation
        does. (Not forgetting first: a version this invocation still knows, the next one must.)"""
        unsaved = list(self._unsaved)
        self._unsaved.clear()
        return unsaved

    def _seen(self, version: Version) -> bool:
        if version in self._recent or version in self._future or version in self.own:
            return True  # the source served it twice in this run
        return self.dedupe and version in self.landed

    def _remember(self, version: Version, position: StampPosition) -> None:
        self._unsaved[version] = None
        if position is StampPosition.FUTURE:
            self._future[version] = None
            return
        self._recent[version] = None
        heapq.heappush(self._recent_by_stamp, version)
        if len(self._recent_by_stamp) % 4096 == 0:
            self._forget_old()

    def _forget_old(self) -> None:
        if self.newest is None:
            return
        horizon = self.newest - self.overlap
        while self._recent_by_stamp and self._recent_by_stamp[0][0] <= horizon:
            forgotten = heapq.heappop(self._recent_by_stamp)
            del self._recent[forgotten]
            self._unsaved.pop(forgotten, None)


def landing_warnings(future_records: int) -> list[str]:
    """What an operator should hear about a run that succeeded: records the cursor did not
    follow because their stamps are in the future (a source's clock or data is wrong)."""
    if not future_records:
        return []
    return [
        f"{future_records} record(s) stamped after the window's end plus the clock-skew "
        "allowance: landed once, not followed by the cursor; the manifest describes the first "
        "few — check the source's clock or data"
    ]
