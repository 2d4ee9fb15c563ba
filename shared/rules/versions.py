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
window, and decides record by record, or a page of records at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
# Versions met before the run forgets those out of the overlap's reach, at the least.
_FORGET_EVERY = 4096


class MissingKey(ValueError):
    """A record without the key its source names; its text says which."""


def key_digest(record: Mapping[str, Any], key_field: str | None) -> bytes:
    """The identity of a record (without its stamp): its key's value, or, for a source without a
    key, the whole record, so that any change makes another version."""
    return value_digest(record if key_field is None else record.get(key_field), key_field)


def value_digest(value: Any, key_field: str | None) -> bytes:
    """`key_digest` of a record whose key's value (or, without a key field, whole self) is
    `value`."""
    require_key(value, key_field)
    return key_text_digest(version_key(value))


def require_key(value: Any, key_field: str | None) -> None:
    """MissingKey if `value`, a record's key field's, is none (a source without a key field
    identifies a record by all of it)."""
    if key_field is not None and (value is None or value == ""):
        raise MissingKey(f"has no {key_field} (the source's record key)")


def version_key(value: Any) -> str | bytes:
    """What tells records apart in memory, cheaper than their digest: a text key as it is, any
    other value (a number, a whole record) as its canonical JSON. Two values have the same
    version key exactly when they have the same digest (`key_text_digest`)."""
    return value if type(value) is str else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def version_keys(values: list[Any]) -> list[str | bytes]:
    """`version_key` of each value: a page's worth at once, its text keys as they are."""
    if set(map(type, values)) <= {str}:
        return values
    return [version_key(value) for value in values]


def key_text_digest(key: str | bytes) -> bytes:
    """What `public.landed_version.key_digest` holds for a record whose version key is `key`."""
    text = key if isinstance(key, bytes) else orjson.dumps(key)
    return hashlib.blake2b(text, digest_size=_DIGEST_BYTES).digest()


Version = tuple[datetime, bytes]  # (last-modified stamp, key digest)
Met = tuple[datetime, Any]  # (last-modified stamp, version key): a version as a run meets it


@dataclass
class LandingCounts:
    late_records: int = 0
    duplicates_skipped: int = 0
    future_records: int = 0
    # Stamped after the window's end, within the skew allowance: left for a later window.
    waiting_records: int = 0
    future_examples: list[str] = field(default_factory=list)


def _same(key: Any) -> bytes:
    return bytes(key)


@dataclass
class VersionFilter:
    """Decides which versions a run lands, and remembers the ones a later window may meet.

    A run meets a version as (stamp, key): by default the key is its digest; a caller that
    passes `digest` meets versions by a cheaper key (`version_key`) and pays for the digest
    only of a version that may be among `landed` or that it remembers.
    `landed` are the versions earlier runs landed with stamps after the window's start; with
    `dedupe` off (explicit reloads: Full Load, Re-specs) they are landed again all the same.
    `cursor_before` is the cursor the run started from (None: no late-record counting).
    `overlap` is how far before the cursor the next Normal window will start; only versions
    within it of the newest stamp, and future-dated ones, need remembering, which bounds memory
    by the source's rate of change rather than by the window's size.

    `admit` decides one version; `admit_page` a page of them at once, with the same outcome:
    a page of ordinary versions (inside the window, none met before) is decided in a few
    passes over its stamps, so that a run pays per page rather than per record.

    A download continued in a later invocation (or redelivered) builds its filter again from
    what it committed: `counts` and `newest` as they were, and `own`, the versions it listed
    (`take_unsaved`) with its parts, which it has landed already.
    """

    window: Window
    overlap: timedelta
    landed: Collection[Version] = frozenset()
    dedupe: bool = True
    cursor_before: datetime | None = None
    digest: Callable[[Any], bytes] = _same
    counts: LandingCounts = field(default_factory=LandingCounts)
    # The newest stamp inside the window: where the cursor may move.
    newest: datetime | None = None
    own: Collection[Version] = frozenset()
    # Met in this run, by key: the stamps within the overlap of the newest one (older ones
    # are forgotten now and then); a key's one stamp as it is, several as a frozenset. Keyed
    # by key, a page of new versions goes in without hashing a stamp.
    _recent: dict[Any, datetime | frozenset[datetime]] = field(default_factory=dict, repr=False)
    # And the future-dated ones, which are all remembered.
    _future: dict[Met, None] = field(default_factory=dict, repr=False)
    # What landed since the last `take_unsaved`, as the pages (stamps, keys) it came in: cheap
    # to note, and looked up only when taken.
    _unsaved: list[tuple[Sequence[datetime], Sequence[Any]]] = field(
        default_factory=list, repr=False
    )
    _forget_at: int = field(default=_FORGET_EVERY, repr=False)
    _landed_stamps: _StampSet = field(init=False, repr=False)
    _own_stamps: _StampSet = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._landed_stamps = _StampSet.of(stamp for stamp, _ in self.landed if self.dedupe)
        self._own_stamps = _StampSet.of(stamp for stamp, _ in self.own)

    def admit(self, stamp: datetime, key: Any) -> bool:
        """Whether the version lands; counts it either way."""
        if not self.window.reads_past_end and not self.window.contains(stamp):
            # A bounded window (a backfill slice) lands its own range only, even from a source
            # that ignores the bound it was asked for.
            return False
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
        if self._seen(stamp, key):
            self.counts.duplicates_skipped += 1
            return False
        if (
            position is StampPosition.IN_WINDOW
            and self.cursor_before is not None
            and stamp <= self.cursor_before
        ):
            self.counts.late_records += 1
        self._unsaved.append(((stamp,), (key,)))
        if position is StampPosition.FUTURE:
            self._future[stamp, key] = None
        else:
            held = self._recent.get(key)
            self._recent[key] = stamp if held is None else _stamps_of(held) | {stamp}
            self._maybe_forget()
        return True

    def admit_page(self, stamps: Sequence[datetime], keys: Sequence[Any]) -> list[bool]:
        """`admit` of each (stamp, key) in turn: whether each lands."""
        if len(stamps) != len(keys):
            raise ValueError(f"{len(stamps)} stamps for {len(keys)} keys")
        if not stamps:
            return []
        first, last = min(stamps), max(stamps)
        if not self._ordinary(stamps, keys, first, last):
            return [self.admit(stamp, key) for stamp, key in zip(stamps, keys, strict=True)]
        if self.newest is None or last > self.newest:
            self.newest = last
        cursor = self.cursor_before
        if cursor is not None and first <= cursor:
            self.counts.late_records += sum(stamp <= cursor for stamp in stamps)
        self._recent.update(zip(keys, stamps, strict=True))
        self._unsaved.append((tuple(stamps), tuple(keys)))
        self._maybe_forget()
        return [True] * len(stamps)

    def _ordinary(
        self, stamps: Sequence[datetime], keys: Sequence[Any], first: datetime, last: datetime
    ) -> bool:
        """Whether every version of a page lands with no more than counting: inside the window
        (not waiting, not future-dated), none met before, in this run or a landed one (a page
        whose keys are all new to the run, and all different)."""
        window = self.window
        return (
            stamp_position(window.end, last) is StampPosition.IN_WINDOW
            and (window.reads_past_end or (window.contains(first) and window.contains(last)))
            and self._landed_stamps.none_among(stamps, first, last)
            and self._own_stamps.none_among(stamps, first, last)
            and (not self._future or {key for _, key in self._future}.isdisjoint(keys))
            and self._recent.keys().isdisjoint(keys)
            and len(set(keys)) == len(keys)
        )

    def remembered(self) -> list[Version]:
        """The versions this run landed that a later Normal window may read again."""
        self._forget_old()
        recent = [(stamp, key) for key, held in self._recent.items() for stamp in _stamps_of(held)]
        return [(stamp, self.digest(key)) for stamp, key in (*recent, *self._future)]

    def take_unsaved(self) -> list[Version]:
        """The remembered versions landed since the last call: a download lists them with each
        part it commits, so that a continued download knows them (`own`) as this invocation
        does. (Not forgetting first: a version this invocation still knows, the next one must.)"""
        unsaved = [
            (stamp, self.digest(key))
            for stamps, keys in self._unsaved
            for stamp, key in self._held(stamps, keys)
        ]
        self._unsaved.clear()
        return unsaved

    def _held(self, stamps: Sequence[datetime], keys: Sequence[Any]) -> list[Met]:
        """The versions of a page this run remembers having landed (it may have forgotten some):
        a page's worth at once, most of them forgotten or held as the one stamp of their key."""
        future = self._future
        if not future and self._recent.keys().isdisjoint(keys):
            return []  # every version of the page forgotten: known without a look at each
        return [
            (stamp, key)
            for stamp, key, held in zip(stamps, keys, map(self._recent.get, keys), strict=True)
            if held is stamp
            or (held is not None and stamp in _stamps_of(held))
            or (future and (stamp, key) in future)
        ]

    def _holds(self, stamp: datetime, key: Any) -> bool:
        """Whether this run remembers having landed the version (it may have forgotten it)."""
        return bool(self._held((stamp,), (key,)))

    def _seen(self, stamp: datetime, key: Any) -> bool:
        if self._holds(stamp, key) or (
            stamp in self._own_stamps and (stamp, self.digest(key)) in self.own
        ):
            return True  # the source served it twice in this run
        return stamp in self._landed_stamps and (stamp, self.digest(key)) in self.landed

    def _maybe_forget(self) -> None:
        if len(self._recent) >= self._forget_at:
            self._forget_old()
            # Forgetting looks at every version held: do it again only once as many more have
            # been met, so that it costs a constant per version.
            self._forget_at = 2 * len(self._recent) + _FORGET_EVERY

    def _forget_old(self) -> None:
        if self.newest is None:
            return
        horizon = self.newest - self.overlap
        kept: dict[Any, datetime | frozenset[datetime]] = {}
        for key, held in self._recent.items():
            if type(held) is datetime:
                if held > horizon:
                    kept[key] = held
            elif young := frozenset(stamp for stamp in _stamps_of(held) if stamp > horizon):
                kept[key] = next(iter(young)) if len(young) == 1 else young
        self._recent = kept


# Bounds of an empty set of stamps: any page lies outside them.
_EARLIEST, _LATEST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _StampSet:
    """The stamps of versions landed before (by earlier runs, or by this run's earlier
    invocations), with their bounds made once: most pages lie outside them, and are known to
    hold none of those versions without a lookup."""

    stamps: frozenset[datetime]
    first: datetime = _LATEST
    last: datetime = _EARLIEST

    @classmethod
    def of(cls, stamps: Iterable[datetime]) -> _StampSet:
        known = frozenset(stamps)
        return cls(known, min(known, default=_LATEST), max(known, default=_EARLIEST))

    def __contains__(self, stamp: datetime) -> bool:
        return stamp in self.stamps

    def none_among(self, stamps: Sequence[datetime], first: datetime, last: datetime) -> bool:
        """Whether no stamp of a page (from `first` to `last`) is among these."""
        return last < self.first or first > self.last or self.stamps.isdisjoint(stamps)


def _stamps_of(held: datetime | frozenset[datetime]) -> frozenset[datetime]:
    return frozenset((held,)) if type(held) is datetime else held  # type: ignore[return-value]


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
