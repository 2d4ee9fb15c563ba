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
from datetime import timedelta
from typing import Any

import orjson

from services.download.adapters import WrittenObject
from shared.connectors.base import Connector
from shared.errors import LockLost, TaskOver
from shared.rules.flows import FlowType, Window, WindowField, recorded_window
from shared.rules.versions import MissingKey, VersionFilter, key_digest
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


# Seconds between the first heartbeat's tries: well over a second in all, which covers the
# emulator's registration even on a loaded machine, and costs nothing when the task is alive.
FIRST_BEAT_RETRY_PAUSES = (0.1, 0.2, 0.4, 0.8)


@dataclass
class StreamProgress:
    """Streams the connector's records through the run's version filter as the JSON lines
    that land: what lands, what is skipped or waits, and what the cursor may follow. A record
    JSON cannot carry (nested past the encoder's limit, an integer beyond 64 bits) is counted
    as malformed, as the source's other unloadable rows are."""

    connector: Connector
    heartbeat: Heartbeat
    versions: VersionFilter | None  # None: a sold window, whose stamps the cursor ignores
    objects: list[WrittenObject] = field(default_factory=list)
    read: int = 0
    without_key: int = 0

    def track(self, records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
        for record in records:
            self.read += 1
            self.heartbeat.maybe_beat()
            try:
                line = orjson.dumps(record)
            except orjson.JSONEncodeError as exc:
                self.connector.malformed.add(f"record {self.read}", f"cannot be landed ({exc})")
                continue
            if self.versions is not None and not self._admit(record):
                continue
            self.heartbeat.progress.records += 1
            yield line

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
    came in, and how long the claim lasts without a heartbeat."""

    attempt: str
    message_id: str
    ttl: timedelta
