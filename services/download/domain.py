"""Download's decisions, pure: the heartbeat's timing and what stops it (`Heartbeat`), what a
delivery streams through the run's version filter and counts (`StreamProgress`), the window a
plan names (`window_from_plan`), and one delivery's claim on a run (`Claim`).

Nothing here touches the database, S3 or Step Functions: the heartbeat's sending and lease
renewal are callables the service passes in (services.download.service).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from services.download.adapters import WrittenObject
from shared.connectors.base import Connector, Lines, Page, PageReader
from shared.errors import LockLost, TaskOver
from shared.rules.flows import FlowType, Window, WindowField, recorded_window
from shared.rules.versions import (
    MissingKey,
    VersionFilter,
    require_key,
    version_key,
    version_keys,
)
from shared.timefmt import parse_iso


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

    def beat(self) -> None:
        self._last = self._monotonic()
        self._send()  # raises TaskOver when the task has timed out
        if not self._renew_lease():
            raise LockLost("the source's lock is no longer held by this execution; stopping")


# Seconds between the first heartbeat's tries: well over a second in all, which covers the
# emulator's registration even on a loaded machine, and costs nothing when the task is alive.
FIRST_BEAT_RETRY_PAUSES = (0.1, 0.2, 0.4, 0.8)


@dataclass
class StreamProgress:
    """Streams the connector's records through the run's version filter as the JSON lines that
    land, a page at a time: what lands, what is skipped or waits, and what the cursor may
    follow. A connector that reads pages of JSON lines (`PageReader`) hands them over as they
    came; the records of any other are encoded here, `ENCODED_PAGE_RECORDS` to a page. A record
    JSON cannot carry (nested past the encoder's limit, an integer beyond 64 bits) is counted
    as malformed, as the source's other unloadable rows are."""

    connector: Connector
    heartbeat: Heartbeat
    versions: VersionFilter | None  # None: a sold window, whose stamps the cursor ignores
    objects: list[WrittenObject] = field(default_factory=list)
    read: int = 0
    without_key: int = 0

    def track(self, window: Window) -> Iterator[tuple[Lines, int]]:
        """(lines, how many) of each page's records that land, until the window is read."""
        connector = self.connector
        pages = (
            connector.pages(window)
            if isinstance(connector, PageReader)
            else self._encoded(connector.records(window))
        )
        for page in pages:
            self.heartbeat.maybe_beat()
            lines, count = self._landing(page)
            self.read += page.read
            if count:
                self.heartbeat.progress.records += count
                yield lines, count

    def _encoded(self, records: Iterable[dict[str, Any]]) -> Iterator[Page]:
        """A connector's records as pages of JSON lines; each record read beats the heartbeat
        if it is due (a source may be slow to send a page's worth)."""
        key_field, stamp_of = self.connector.key_field, self.connector.last_modified
        lines: list[bytes] = []
        stamps: list[datetime | None] = []
        keys: list[Any] = []
        for number, record in enumerate(records, start=self.read + 1):
            self.heartbeat.maybe_beat()
            try:
                line = orjson.dumps(record)
            except orjson.JSONEncodeError as exc:
                # A page of its own, so that the records around it keep their numbers.
                yield Page(b"".join(lines), stamps, keys, len(stamps))
                yield Page(b"", [], [], 1)
                self.connector.malformed.add(f"record {number}", f"cannot be landed ({exc})")
                lines, stamps, keys = [], [], []
                continue
            lines.append(line + b"\n")
            stamps.append(stamp_of(record))
            keys.append(record.get(key_field) if key_field is not None else record)
            if len(lines) == ENCODED_PAGE_RECORDS:
                yield Page(b"".join(lines), stamps, keys, len(stamps))
                lines, stamps, keys = [], [], []
        yield Page(b"".join(lines), stamps, keys, len(stamps))

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


# Records a page of a connector that hands over records one by one (files, tables) holds.
ENCODED_PAGE_RECORDS = 1000


def cut_parts(
    chunks: Iterator[tuple[Lines, int]], size: int
) -> Iterator[Iterator[tuple[Lines, int]]]:
    """The stream of (lines, how many) cut into parts of at most `size` records: each part the
    (lines, how many) to write, to be written in full before the next part is asked for."""
    carry: list[tuple[Lines, int]] = []

    def part() -> Iterator[tuple[Lines, int]]:
        room = size
        while room:
            lines, count = carry.pop() if carry else next(chunks, (b"", 0))
            if not count:
                return
            if count > room:
                head, tail = split_lines(lines, room)
                carry.append((tail, count - room))
                yield head, room
                return
            room -= count
            yield lines, count

    for first in chunks:
        carry.append(first)
        while carry:  # what is left of a chunk that a part's end cut
            yield part()


def split_lines(lines: Lines, count: int) -> tuple[Lines, Lines]:
    """JSON lines cut after the first `count` of them."""
    *head, tail = lines.split(b"\n", count)
    return b"".join(line + b"\n" for line in head), tail


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
    came in, and how long the claim lasts without a heartbeat."""

    attempt: str
    message_id: str
    ttl: timedelta
