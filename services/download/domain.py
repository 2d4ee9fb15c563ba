"""Download's decisions, pure: the heartbeat's timing and what stops it (`Heartbeat`), what a
delivery streams through the run's version filter and counts (`StreamProgress`, `Tally`), where
a part ends and when an invocation stops to be continued (`Part`, `Budget`), the window a plan
names (`window_from_plan`), and one delivery's claim on a run (`Claim`).

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
from shared.connectors.base import Connector, MalformedRows, Position
from shared.errors import LockLost, TaskOver
from shared.rules.flows import FlowType, Window, WindowField, recorded_window
from shared.rules.versions import LandingCounts, MissingKey, VersionFilter, key_digest
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


@dataclass
class StreamProgress:
    """Streams the connector's records through the run's version filter as the JSON lines
    that land (None in place of a record that does not), from what an earlier invocation of
    the run tallied (`resumed`): what lands, what is skipped or waits, and what the cursor may
    follow. A record JSON cannot carry (nested past the encoder's limit, an integer beyond 64
    bits) is counted as malformed, as the source's other unloadable rows are."""

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

    def track(self, records: Iterable[dict[str, Any] | None]) -> Iterator[bytes | None]:
        for record in records:
            self.heartbeat.maybe_beat()
            if record is None:  # the connector checks in: nothing read
                yield None
                continue
            self.read += 1
            try:
                line = orjson.dumps(record)
            except orjson.JSONEncodeError as exc:
                self.connector.malformed.add(f"record {self.read}", f"cannot be landed ({exc})")
                yield None
                continue
            if self.versions is not None and not self._admit(record):
                yield None
                continue
            self.heartbeat.progress.records += 1
            yield line

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

    def _admit(self, record: dict[str, Any]) -> bool:
        assert self.versions is not None
        malformed = self.connector.malformed
        stamp = self.connector.last_modified(record)
        if stamp is None:
            malformed.add(f"record {self.read}", "has no usable last-modified date")
            return False
        try:
            digest = key_digest(record, self.connector.key_field)
        except MissingKey as exc:
            self.without_key += 1
            malformed.add(f"record {self.read}", str(exc))
            return False
        return self.versions.admit(stamp, digest)


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
    """The lines of one part, cut from a stream of lines (None: a record that does not land)
    at the first place the connector can resume from once the part holds `max_records` lines
    or the invocation's budget is spent. A connector that cannot resume is cut at
    `max_records` exactly and never stops early. Once the lines are exhausted, `end` says where
    and why the part ended."""

    def __init__(
        self,
        stream: Iterator[bytes | None],
        connector: Connector,
        max_records: int,
        budget: Budget,
    ) -> None:
        self._stream, self._connector = stream, connector
        self._max_records, self._budget = max_records, budget
        self.records = 0
        self.end: PartEnd | None = None

    def __iter__(self) -> Iterator[bytes]:
        # Every record passes here: locals, and the connector's position (which an s3_files
        # connector builds when asked) only once the part is full or the budget spent.
        connector, max_records = self._connector, self._max_records
        spent, resumable = self._budget.spent, connector.resumable
        for line in self._stream:
            if line is not None:
                self.records += 1
                yield line
            full = self.records >= max_records
            if not resumable:
                if full:
                    self.end = PartEnd(None, last=False, stop=False)
                    return
            elif (full or spent()) and (position := connector.position) is not None:
                self.end = PartEnd(position, last=False, stop=spent())
                return
        self.end = PartEnd(None, last=True, stop=False)
