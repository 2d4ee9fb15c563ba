"""Download's decisions, pure: the heartbeat's timing and what stops it (`Heartbeat`), what a
delivery streams through the run's version filter and counts, a page at a time
(`StreamProgress`, `Tally`), where a part ends and when an invocation stops to be continued
(`Part`, `Budget`), the window a plan names (`window_from_plan`), and one delivery's claim on a
run (`Claim`).

Nothing here touches the database, S3 or Step Functions: the heartbeat's sending and lease
renewal are callables the service passes in (services.download.service).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from services.download.adapters import WrittenObject
from shared.connectors.base import Connector, Lines, MalformedRows, Page, PageReader, Position
from shared.errors import LockLost, TaskOver
from shared.rules.flows import FlowType, Window, WindowField, recorded_window
from shared.rules.versions import (
    LandingCounts,
    MissingKey,
    VersionFilter,
    require_key,
    version_key,
    version_keys,
)
from shared.timefmt import isoformat, parse_iso


@dataclass
class DownloadProgress:
    """Records streamed and compressed bytes written so far; each heartbeat reports them."""

    records: int = 0
    bytes: int = 0


class Heartbeat:
    """Tells Step Functions the download is alive and renews the lock lease, at most once per
    interval; stops the download the moment either answers that it is over."""

    def __init__(
        self,
        *,
        send: Callable[[], None],
        renew_lease: Callable[[], bool],
        interval_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._send, self._renew_lease = send, renew_lease
        self._interval, self._monotonic, self._sleep = interval_seconds, monotonic, sleep
        self._last = monotonic()
        self.progress = DownloadProgress()

    def first_beat(self) -> None:
        """A delivery's first heartbeat, before it connects. A task that answers "over" is asked
        again a few times: the local emulator registers a task's heartbeat a moment after it
        sends the task's message, so a fast worker's first beat can find no task yet (moto's
        callback endpoint has no heartbeat endpoint until then). A task really over stays over."""
        for pause in FIRST_BEAT_RETRY_PAUSES:
            try:
                self.beat()
                return
            except TaskOver:
                self._sleep(pause)
        self.beat()

    def maybe_beat(self) -> None:
        if self._monotonic() - self._last >= self._interval:
            self.beat()

    def wait(self, seconds: float) -> None:
        """Sleep `seconds`, beating each time a beat falls due: a wait on a vendor (its
        Retry-After, a concurrency slot) keeps the task alive, and a cancel or a lost lock
        stops it the moment the next beat hears of it."""
        end = self._monotonic() + seconds
        while (now := self._monotonic()) < end:
            self._sleep(max(0.0, min(end, self._last + self._interval) - now))
            self.maybe_beat()

    def beat(self) -> None:
        self._last = self._monotonic()
        self._send()  # raises TaskOver when the task has timed out
        if not self._renew_lease():
            raise LockLost("the source's lock is no longer held by this execution; stopping")

    @contextmanager
    def while_waiting(self, interrupt: Callable[[], None]) -> Iterator[None]:
        """Beat on another thread, once per interval, while the caller waits for its source
        (a partner table's query sorting before its first row), which the download's own beats
        cannot do. If a beat says the download must stop, `interrupt` ends the wait and the
        beat's error is raised in place of whatever the wait raised."""
        stop = threading.Event()
        failures: list[BaseException] = []

        def pulse() -> None:
            while not stop.wait(self._interval):
                try:
                    self.beat()
                except BaseException as exc:  # raised in the waiting thread, below
                    failures.append(exc)
                    interrupt()
                    return

        pulser = threading.Thread(target=pulse, name="heartbeat-while-waiting", daemon=True)
        pulser.start()
        try:
            yield
        finally:
            stop.set()
            pulser.join()
            if failures:
                raise failures[0]


# Seconds between the first heartbeat's tries: well over a second in all, which covers the
# emulator's registration even on a loaded machine, and costs nothing when the task is alive.
FIRST_BEAT_RETRY_PAUSES = (0.1, 0.2, 0.4, 0.8)


@dataclass
class Tally:
    """What a run's download has counted so far. Committed with each part (as JSON), so that a
    continued or redelivered download goes on counting from it."""

    records: int = 0  # landed
    bytes: int = 0  # compressed, of the parts written
    read: int = 0  # records the connector served
    without_key: int = 0
    malformed: MalformedRows = field(default_factory=MalformedRows)
    counts: LandingCounts = field(default_factory=LandingCounts)
    newest: datetime | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "newest": isoformat(self.newest) if self.newest else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tally:
        return cls(
            **{
                **data,
                "malformed": MalformedRows(**data["malformed"]),
                "counts": LandingCounts(**data["counts"]),
                "newest": parse_iso(data["newest"]) if data["newest"] else None,
            }
        )


# Records a page of a connector that hands over records one by one (files, tables) holds.
ENCODED_PAGE_RECORDS = 1000


@dataclass(frozen=True)
class Chunk:
    """What one page of the source leaves to land: its lines that land, how many, and where the
    stream resumes after the page (None: it cannot resume there)."""

    lines: Lines
    count: int
    position: Position | None


@dataclass
class StreamProgress:
    """Streams the connector's records through the run's version filter as the JSON lines that
    land, a page at a time, from what an earlier invocation of the run tallied (`resumed`):
    what lands, what is skipped or waits, and what the cursor may follow. A connector that reads
    pages of JSON lines (`PageReader`) hands them over as they came; the records of any other
    are encoded here, in pages of about `ENCODED_PAGE_RECORDS`, a page ending wherever the
    connector checks in. A record JSON cannot carry (nested past the encoder's limit, an integer
    beyond 64 bits) is counted as malformed, as the source's other unloadable rows are."""

    connector: Connector
    heartbeat: Heartbeat
    versions: VersionFilter | None  # None: a sold window, whose stamps the cursor ignores
    resumed: Tally = field(default_factory=Tally)
    # The run's parts, those of its earlier invocations first.
    objects: list[WrittenObject] = field(default_factory=list)
    read: int = 0
    without_key: int = 0

    def __post_init__(self) -> None:
        self.read, self.without_key = self.resumed.read, self.resumed.without_key

    def track(
        self,
        window: Window,
        resume: Position | None = None,
        part_records: int = ENCODED_PAGE_RECORDS,
        spent: Callable[[], bool] = lambda: False,
    ) -> Iterator[Chunk]:
        """A chunk for each page of the window after `resume`, until the window is read. A page
        of encoded records ends at the first place the connector can resume from once it holds
        `part_records` (or ENCODED_PAGE_RECORDS, if fewer) or the invocation's time is `spent`,
        so that a part (`Part`) ends there."""
        connector, waiting = self.connector, self.heartbeat.while_waiting
        pages = (
            connector.pages(window, resume, waiting=waiting)
            if isinstance(connector, PageReader)
            else self._encoded(
                connector.records(window, resume, waiting=waiting),
                min(part_records, ENCODED_PAGE_RECORDS),
                spent,
            )
        )
        for page in pages:
            self.heartbeat.maybe_beat()
            lines, count = self._landing(page)
            self.read += page.read
            self.heartbeat.progress.records += count
            yield Chunk(lines, count, page.position)

    def tally(self) -> Tally:
        """The run's tally now: the resumed one and this invocation's."""
        versions = self.versions
        warnings = dict.fromkeys([*self.resumed.warnings, *self.connector.warnings])
        return Tally(
            records=self.heartbeat.progress.records,
            bytes=self.heartbeat.progress.bytes,
            read=self.read,
            without_key=self.without_key,
            malformed=self.resumed.malformed.plus(self.connector.malformed),
            counts=versions.counts if versions is not None else LandingCounts(),
            newest=versions.newest if versions is not None else None,
            warnings=list(warnings),
        )

    def _encoded(
        self, records: Iterable[dict[str, Any] | None], size: int, spent: Callable[[], bool]
    ) -> Iterator[Page]:
        """A connector's records as pages of JSON lines, each with the connector's position
        after it: a page ends wherever the connector checks in (None), and at the first record
        after which it can resume once the page holds `size` records or the time is `spent` (a
        connector that cannot resume: at `size`). Each record read beats the heartbeat if it is
        due (a source may be slow to send a page's worth)."""
        connector = self.connector
        key_field, stamp_of = connector.key_field, connector.last_modified
        resumable = connector.resumable
        lines: list[bytes] = []
        stamps: list[datetime | None] = []
        keys: list[Any] = []
        read = 0
        for record in records:
            self.heartbeat.maybe_beat()
            if record is not None:
                read += 1
                try:
                    line = orjson.dumps(record)
                except orjson.JSONEncodeError as exc:
                    where = f"record {self.read + read}"
                    connector.malformed.add(where, f"cannot be landed ({exc})")
                else:
                    lines.append(line + b"\n")
                    stamps.append(stamp_of(record))
                    keys.append(record.get(key_field) if key_field is not None else record)
                if len(lines) < size and not (resumable and spent()):
                    continue
            position = connector.position  # an s3_files connector builds it when asked
            if record is not None and resumable and position is None:
                continue  # inside a stretch the source cannot resume from
            yield Page(b"".join(lines), stamps, keys, read, position)
            lines, stamps, keys, read = [], [], [], 0
        yield Page(b"".join(lines), stamps, keys, read, connector.position)

    def _landing(self, page: Page) -> tuple[Lines, int]:
        """The page's lines that land, and how many."""
        if self.versions is None:
            return page.lines, len(page.stamps)
        keep = self._admit(page)
        if all(keep):
            return page.lines, len(keep)
        lines = bytes(page.lines).split(b"\n")
        kept = [line for line, lands in zip(lines, keep) if lands]  # noqa: B905 (a last b"")
        return b"".join(line + b"\n" for line in kept), len(kept)

    def _admit(self, page: Page) -> list[bool]:
        """Whether each record of the page lands; a record without a usable stamp or key is
        counted as malformed."""
        assert self.versions is not None
        stamps, keys = page.stamps, page.keys
        if None not in stamps and None not in keys and "" not in keys:
            try:
                return self.versions.admit_page(stamps, version_keys(keys))  # type: ignore[arg-type]
            except orjson.JSONEncodeError:
                pass  # told record by record below
        keep = [False] * len(stamps)
        usable: list[int] = []
        usable_keys: list[Any] = []
        malformed, key_field = self.connector.malformed, self.connector.key_field
        for index, (stamp, key) in enumerate(zip(stamps, keys, strict=True)):
            where = f"record {self.read + index + 1}"
            if stamp is None:
                malformed.add(where, "has no usable last-modified date")
                continue
            try:
                require_key(key, key_field)
                usable_keys.append(version_key(key))
            except MissingKey as exc:
                self.without_key += 1
                malformed.add(where, str(exc))
                continue
            except orjson.JSONEncodeError as exc:
                malformed.add(where, f"cannot be landed ({exc})")
                continue
            usable.append(index)
        admitted = self.versions.admit_page([stamps[i] for i in usable], usable_keys)  # type: ignore[misc]
        for index, lands in zip(usable, admitted, strict=True):
            keep[index] = lands
        return keep


def window_from_plan(plan: Mapping[str, Any]) -> Window:
    return recorded_window(
        FlowType(plan["flow_type"]),
        WindowField(plan["window_field"]),
        parse_iso(plan["window_start"]),
        parse_iso(plan["window_end"]),
        plan["window_start_inclusive"],
    )


@dataclass(frozen=True)
class Claim:
    """One delivery's claim on downloading a run: a fresh id per attempt, the SQS message it
    came in, how long the claim lasts without a heartbeat, and which of the run's Download
    tasks it serves (`continuation`: 0 for the first, and for a state machine that does not
    continue downloads)."""

    attempt: str
    message_id: str
    ttl: timedelta
    continuation: int = 0


# -- parts, and when an invocation stops ------------------------------------------------------

# An invocation keeps at least this share of its time for what comes after it decides to stop
# (the page or row it is reading, the part's upload, the commit), or the stop margin if less.
STOP_MARGIN_SHARE = 0.25


@dataclass(frozen=True)
class Budget:
    """How long one invocation downloads: past `deadline` (on `monotonic`) it stops at the
    next place its source can resume from, commits, and reports more to do."""

    deadline: float
    monotonic: Callable[[], float] = time.monotonic

    def spent(self) -> bool:
        return self.monotonic() >= self.deadline


UNBOUNDED = Budget(math.inf)
"""For a state machine that does not continue downloads: the invocation runs to the end."""


def invocation_budget(
    time_left: float, stop_margin_seconds: float, monotonic: Callable[[], float] = time.monotonic
) -> Budget:
    """The budget of an invocation with `time_left` seconds to live: it stops when what is left
    falls below the stop margin, or below STOP_MARGIN_SHARE of its time if that is less."""
    margin = min(stop_margin_seconds, time_left * STOP_MARGIN_SHARE)
    return Budget(monotonic() + time_left - margin, monotonic)


@dataclass(frozen=True)
class PartEnd:
    """Where a part ended: the position the source's stream resumes from after it (None where
    the source cannot resume), whether the stream is over, and whether the invocation stops."""

    position: Position | None
    last: bool
    stop: bool


class Part:
    """The (lines, how many) of one part, cut from a stream of chunks at the end of the first
    page the connector can resume after once the part holds `max_records` records or the
    invocation's budget is spent. A connector that cannot resume is cut at the first page end
    once the part is full, and never stops early. Once the chunks are exhausted, `end` says
    where and why the part ended."""

    def __init__(
        self, chunks: Iterator[Chunk], resumable: bool, max_records: int, budget: Budget
    ) -> None:
        self._chunks, self._resumable = chunks, resumable
        self._max_records, self._budget = max_records, budget
        self.records = 0
        self.end: PartEnd | None = None

    def __iter__(self) -> Iterator[tuple[Lines, int]]:
        max_records, spent, resumable = self._max_records, self._budget.spent, self._resumable
        for chunk in self._chunks:
            if chunk.count:
                self.records += chunk.count
                yield chunk.lines, chunk.count
            full = self.records >= max_records
            if not resumable:
                if full:
                    self.end = PartEnd(None, last=False, stop=False)
                    return
            elif (full or spent()) and chunk.position is not None:
                self.end = PartEnd(chunk.position, last=False, stop=spent())
                return
        self.end = PartEnd(None, last=True, stop=False)
