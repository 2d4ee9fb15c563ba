"""services.download.domain: Heartbeat (and its beats while the source makes it wait),
window_from_plan, what StreamProgress lands and tallies, and where Part cuts a stream."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.download.adapters import S3RawSink
from services.download.domain import (
    FIRST_BEAT_RETRY_PAUSES,
    UNBOUNDED,
    Budget,
    Chunk,
    DownloadProgress,
    Heartbeat,
    LockLost,
    Part,
    PartEnd,
    StreamProgress,
    Tally,
    invocation_budget,
    window_from_plan,
)
from services.download.settings import gzip_level
from shared.connectors.base import (
    Lines,
    MalformedRows,
    Page,
    PageReader,
    Position,
    Waiting,
    no_waiting,
)
from shared.errors import TaskOver
from shared.rules.flows import Window, WindowField
from shared.rules.versions import LandingCounts, VersionFilter, key_digest, key_text_digest
from shared.runtime.catalogue import RAW_GZIP_LEVEL
from shared.runtime.settings import SettingsError
from shared.timefmt import isoformat
from tests.fakes import FakeClock, FakeConnector, FakeS3, FakeTask, quiet_heartbeat

INTERVAL = 60.0
START = datetime(2026, 11, 21, 18, 40, 2, tzinfo=UTC)
END = datetime(2026, 11, 22, 18, 41, 57, 126486, tzinfo=UTC)
WINDOW = Window(WindowField.SOLD_DATE, START, END, True)


# --- Heartbeat ----------------------------------------------------------------------------------


def a_heartbeat(task: FakeTask, clock: FakeClock) -> Heartbeat:
    return Heartbeat(
        send=task.send,
        renew_lease=task.renew_lease,
        interval_seconds=INTERVAL,
        monotonic=clock,
    )


def test_no_heartbeat_is_sent_before_the_interval() -> None:
    task, clock = FakeTask(), FakeClock()
    heartbeat = a_heartbeat(task, clock)
    for _ in range(5):
        clock.advance(INTERVAL / 10)
        heartbeat.maybe_beat()
    assert (task.beats, task.renewals) == (0, 0)


def test_one_heartbeat_and_one_renewal_per_interval() -> None:
    # Given a download that checks in every 10 seconds for three intervals
    task, clock = FakeTask(), FakeClock()
    heartbeat = a_heartbeat(task, clock)
    for _ in range(18):
        clock.advance(10)
        heartbeat.maybe_beat()
    # Then it beat and renewed its lease once per interval
    assert (task.beats, task.renewals) == (3, 3)


def test_a_beat_after_the_task_ended_stops_the_download() -> None:
    task, clock = FakeTask(over=True), FakeClock()
    heartbeat = a_heartbeat(task, clock)
    clock.advance(INTERVAL)
    with pytest.raises(TaskOver):
        heartbeat.maybe_beat()
    assert task.renewals == 0


def test_a_lost_lock_stops_the_download() -> None:
    task, clock = FakeTask(holds_lock=False), FakeClock()
    heartbeat = a_heartbeat(task, clock)
    clock.advance(INTERVAL)
    with pytest.raises(LockLost) as caught:
        heartbeat.maybe_beat()
    assert caught.value.error_name == "LockLost"


def a_sleeping_heartbeat(task: FakeTask, clock: FakeClock) -> tuple[Heartbeat, list[float]]:
    """A heartbeat whose sleeps move the clock; returns it and the sleeps it took."""
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    heartbeat = Heartbeat(
        send=task.send,
        renew_lease=task.renew_lease,
        interval_seconds=INTERVAL,
        monotonic=clock,
        sleep=sleep,
    )
    return heartbeat, sleeps


def test_a_long_wait_beats_every_interval_and_lasts_exactly_as_asked() -> None:
    # Given a heartbeat that last beat 20 seconds ago
    task, clock = FakeTask(), FakeClock()
    heartbeat, sleeps = a_sleeping_heartbeat(task, clock)
    clock.advance(20)
    # When the download waits 3.5 intervals on its vendor (a Retry-After, a slot)
    started = clock.now
    heartbeat.wait(3.5 * INTERVAL)
    # Then it beat the moment each beat fell due, and waited no more and no less than asked
    assert clock.now - started == 3.5 * INTERVAL
    assert sleeps == [INTERVAL - 20, INTERVAL, INTERVAL, 3.5 * INTERVAL - (3 * INTERVAL - 20)]
    assert (task.beats, task.renewals) == (3, 3)


def test_a_wait_stops_at_the_first_beat_that_finds_the_task_over() -> None:
    task, clock = FakeTask(), FakeClock()
    heartbeat, sleeps = a_sleeping_heartbeat(task, clock)
    task.over = True  # timed out, failed, or a cancel ended it
    with pytest.raises(TaskOver):
        heartbeat.wait(10 * INTERVAL)
    assert sleeps == [INTERVAL]


# --- window_from_plan ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window",
    [
        Window(WindowField.LAST_MODIFIED, START, END, False),
        Window(WindowField.SOLD_DATE, datetime(2021, 1, 1, tzinfo=UTC), END, True),
    ],
)
def test_a_plan_carries_its_window_unchanged(window: Window) -> None:
    # Given the plan validation wrote for a window
    plan = {
        "flow_type": "normal",
        "window_field": window.field.value,
        "window_start": isoformat(window.start),
        "window_end": isoformat(window.end),
        "window_start_inclusive": window.start_inclusive,
    }
    # Then download reads back the same window
    assert window_from_plan(plan) == window


def test_a_backfill_plan_is_a_slice_that_ends_before_its_end() -> None:
    plan = {
        "flow_type": "backfill",
        "window_field": "last_modified",
        "window_start": isoformat(START),
        "window_end": isoformat(END),
        "window_start_inclusive": True,
    }
    window = window_from_plan(plan)
    assert window == Window(WindowField.LAST_MODIFIED, START, END, True, end_exclusive=True)
    assert not window.contains(END)


def test_a_backfill_slice_lands_only_its_range_whatever_the_source_sends() -> None:
    # Given a slice [START, END) and a source that ignores the upper bound it was asked for
    slice_ = Window(WindowField.LAST_MODIFIED, START, END, True, end_exclusive=True)
    versions = VersionFilter(window=slice_, overlap=timedelta(minutes=12), dedupe=False)
    stamps = [START, END - timedelta(microseconds=1), END, END + timedelta(days=1)]
    # Then only the stamps in [START, END) land; none is counted as future-dated or waiting
    landed = [
        versions.admit(stamp, key_digest({"id": str(i)}, "id")) for i, stamp in enumerate(stamps)
    ]
    assert landed == [True, True, False, False]
    assert (versions.counts.future_records, versions.counts.waiting_records) == (0, 0)


class SlowToRegisterTask(FakeTask):
    """A task the emulator has not registered for heartbeats yet during its first `unready`
    heartbeats: they answer that the task is over."""

    def __init__(self, *, unready: int) -> None:
        super().__init__()
        self.unready = unready

    def send(self) -> None:
        if self.unready:
            self.unready -= 1
            raise TaskOver("the task is over (InvalidToken)")
        super().send()


def test_the_first_heartbeat_asks_again_while_the_task_is_not_registered_yet() -> None:
    task, pauses = SlowToRegisterTask(unready=2), list[float]()
    heartbeat = Heartbeat(
        send=task.send, renew_lease=task.renew_lease, interval_seconds=INTERVAL, sleep=pauses.append
    )
    heartbeat.first_beat()
    assert (task.beats, task.renewals) == (1, 1)
    assert pauses == list(FIRST_BEAT_RETRY_PAUSES[:2])


def test_a_task_really_over_stops_the_first_heartbeat_after_its_tries() -> None:
    task, pauses = FakeTask(over=True), list[float]()
    heartbeat = Heartbeat(
        send=task.send, renew_lease=task.renew_lease, interval_seconds=INTERVAL, sleep=pauses.append
    )
    with pytest.raises(TaskOver):
        heartbeat.first_beat()
    assert pauses == list(FIRST_BEAT_RETRY_PAUSES)
    assert task.renewals == 0


# --- StreamProgress -----------------------------------------------------------------------------


def test_a_record_json_cannot_carry_is_malformed_and_the_rest_land() -> None:
    # Given records a JSON encoder cannot write: nested 300 deep, an integer beyond 64 bits
    deep: Any = "leaf"
    for _ in range(300):
        deep = [deep]
    records = [{"id": "1"}, {"id": "2", "deep": deep}, {"id": "3", "big": 10**30}, {"id": "4"}]
    connector = FakeConnector(records)
    progress = StreamProgress(connector, quiet_heartbeat(), versions=None)
    raw = FakeS3(START)
    # When they stream into a part of the raw bucket
    written = S3RawSink(raw, "raw").write_part("part-00000.jsonl.gz", pairs(progress.track(WINDOW)))
    # Then the others land, and those two are counted as malformed, with why
    lines = gzip.decompress(raw.objects["part-00000.jsonl.gz"][0]).splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["1", "4"]
    assert written.records == 2
    assert connector.malformed.examples == [
        "record 2: cannot be landed (Recursion limit reached)",
        "record 3: cannot be landed (Integer exceeds 64-bit range)",
    ]


# --- Part: where a part ends, and when an invocation stops -------------------------------------


def pairs(chunks: Iterable[Chunk]) -> list[tuple[Lines, int]]:
    """The (lines, how many) of each chunk, as a sink takes them."""
    return [(chunk.lines, chunk.count) for chunk in chunks]


def ids_of(lines: Iterable[tuple[Lines, int]]) -> list[str]:
    """The ids of the records in (lines, how many) pairs."""
    return [json.loads(line)["id"] for chunk, _ in lines for line in chunk.splitlines()]


def cut(
    connector: FakeConnector, max_records: int, budget: Budget = UNBOUNDED
) -> list[tuple[list[str], PartEnd]]:
    """The stream of `connector`'s records cut into parts: each part's ids and its end."""
    progress = StreamProgress(connector, quiet_heartbeat(), versions=None)
    chunks = progress.track(WINDOW, None, max_records, budget.spent)
    parts = []
    while True:
        part = Part(chunks, connector.resumable, max_records, budget)
        ids = ids_of(part)
        assert part.end is not None
        parts.append((ids, part.end))
        if part.end.last or part.end.stop:
            return parts


def records(count: int) -> list[dict[str, Any]]:
    return [{"id": str(index)} for index in range(count)]


def test_a_part_ends_at_the_first_place_the_source_can_resume_from_once_it_is_full() -> None:
    # Given a source that can resume only after every third record (an API's pages of three)
    connector = FakeConnector(records(8), page=3)
    # When its stream is cut into parts of two records
    parts = cut(connector, max_records=2)
    # Then each part runs on to the end of a page, and says where the source resumes after it
    assert [ids for ids, _ in parts] == [["0", "1", "2"], ["3", "4", "5"], ["6", "7"], []]
    assert [end.position for _, end in parts] == [{"served": 3}, {"served": 6}, {"served": 8}, None]
    assert [end.last for _, end in parts] == [False, False, False, True]


def test_a_source_that_cannot_resume_is_cut_at_the_part_size_and_never_stops_early() -> None:
    connector = FakeConnector(records(5), page=0)
    spent = Budget(deadline=0.0, monotonic=lambda: 1.0)
    parts = cut(connector, max_records=2, budget=spent)
    assert [ids for ids, _ in parts] == [["0", "1"], ["2", "3"], ["4"]]
    assert [(end.position, end.stop) for _, end in parts] == [(None, False)] * 3


def test_an_invocation_out_of_time_stops_at_its_next_resumable_place() -> None:
    # Given a budget that runs out once the fourth record has been read
    clock = FakeClock(0.0)
    connector = FakeConnector(records(10), page=3, on_record=lambda served: clock.advance(1))
    budget = Budget(deadline=4.0, monotonic=clock)
    # When the stream is cut into parts of a hundred records
    parts = cut(connector, max_records=100, budget=budget)
    # Then the part ends at the end of the second page and the invocation stops there
    assert parts == [(["0", "1", "2", "3", "4", "5"], PartEnd({"served": 6}, False, True))]


@dataclass
class CheckingIn(FakeConnector):
    """A source that reads a stretch it leaves out (a check-in, None) after each record."""

    def records(
        self, window: Window, resume: Position | None = None, *, waiting: Waiting = no_waiting
    ) -> Iterator[dict[str, Any] | None]:
        for served, item in enumerate(self.items, start=1):
            yield dict(item)
            self.position = {"served": served}
            yield None
            self.position = None


def test_a_check_in_is_not_a_record_but_a_place_to_stop_at() -> None:
    # Given a source that checks in after each record, and a budget spent after the first
    connector = CheckingIn(records(3))
    progress = StreamProgress(connector, quiet_heartbeat(), versions=None)
    spent_after_one = iter([False, True])
    budget = Budget(deadline=1.0, monotonic=lambda: float(next(spent_after_one, True)))
    # When the stream is cut into parts
    part = Part(progress.track(WINDOW, None, 100, budget.spent), connector.resumable, 100, budget)
    # Then the part holds the one record, the invocation stops at the check-in after it, and
    # the check-in counted no record read
    assert ids_of(part) == ["0"]
    assert part.end == PartEnd({"served": 1}, last=False, stop=True)
    assert progress.read == 1


def test_an_invocation_out_of_time_with_nothing_landed_stops_without_a_part() -> None:
    # Given records that all fail to land (not JSON-encodable) and a budget already spent
    connector = FakeConnector([{"id": "x", "big": 10**30}] * 3, page=2)
    spent = Budget(deadline=0.0, monotonic=lambda: 1.0)
    # Then the invocation stops at the first resumable place, its part empty
    assert cut(connector, max_records=100, budget=spent) == [
        ([], PartEnd({"served": 2}, last=False, stop=True))
    ]


@pytest.mark.parametrize(
    ("time_left", "margin", "deadline"),
    [
        (900.0, 120, 1000.0 + 780),  # the cloud: the stop margin
        (4.0, 120, 1000.0 + 3),  # a tiny function timeout: a quarter of it
        (math.inf, 120, math.inf),  # no known end
    ],
)
def test_an_invocation_keeps_its_stop_margin_or_a_quarter_of_its_time(
    time_left: float, margin: int, deadline: float
) -> None:
    assert invocation_budget(time_left, margin, FakeClock(1000.0)).deadline == deadline
    assert not UNBOUNDED.spent()


# --- Tally: what a continued download goes on counting from --------------------------------------


def test_a_tally_goes_through_its_checkpoint_unchanged() -> None:
    tally = Tally(
        records=7,
        bytes=1234,
        read=9,
        without_key=1,
        malformed=MalformedRows(2, ["record 3: has no id", "record 5: cannot be landed"]),
        counts=LandingCounts(1, 2, 3, 4, ["last modified 2027-01-01T00:00:00.000000Z, after"]),
        newest=END,
        warnings=["source 'p': connection.key_column 'k' of public.t has no index"],
    )
    assert Tally.from_json(json.loads(json.dumps(tally.to_json()))) == tally
    assert Tally.from_json(Tally().to_json()) == Tally()


def test_the_tally_adds_this_invocations_counts_to_the_resumed_ones() -> None:
    # Given a download resumed from a tally, whose connector meets one more malformed row and
    # the same warning again
    resumed = Tally(records=5, bytes=10, read=6, malformed=MalformedRows(1, ["a"]), warnings=["w"])
    connector = FakeConnector(records(2), warnings=["w"])
    heartbeat = quiet_heartbeat()
    heartbeat.progress = DownloadProgress(resumed.records, resumed.bytes)
    progress = StreamProgress(connector, heartbeat, None, resumed)
    landing = pairs(progress.track(WINDOW))
    connector.malformed.add("record 8", "b")
    # Then the tally counts both invocations, the warning once
    tally = progress.tally()
    assert (tally.records, tally.read, len(ids_of(landing))) == (7, 8, 2)
    assert (tally.malformed.count, tally.malformed.examples) == (2, ["a", "record 8: b"])
    assert tally.warnings == ["w"]


# --- Heartbeat while the source makes the download wait --------------------------------------


def test_a_wait_for_the_source_is_beaten_through() -> None:
    # Given a heartbeat every 10 ms, and a wait for the source of 100 ms
    task = FakeTask()
    heartbeat = Heartbeat(send=task.send, renew_lease=task.renew_lease, interval_seconds=0.01)
    interrupted: list[bool] = []
    # When the download waits
    with heartbeat.while_waiting(lambda: interrupted.append(True)):
        time.sleep(0.1)
    # Then the task heard from it meanwhile, and nothing was interrupted
    assert task.beats >= 3 and task.beats == task.renewals
    assert not interrupted


def test_a_wait_is_interrupted_when_a_beat_says_the_download_must_stop() -> None:
    # Given a task that has timed out, and a wait that only an interrupt ends
    task = FakeTask(over=True)
    heartbeat = Heartbeat(send=task.send, renew_lease=task.renew_lease, interval_seconds=0.01)
    ended = threading.Event()

    def query_cancelled() -> None:
        raise RuntimeError("canceling statement due to user request")

    # When the download waits, Then the beat interrupts the wait and its error is raised
    with pytest.raises(TaskOver), heartbeat.while_waiting(ended.set):
        assert ended.wait(timeout=10), "the wait was never interrupted"
        query_cancelled()


@dataclass
class JsonLinesSource(FakeConnector):
    """A connector that hands over its records a page of JSON lines at a time, as a JSON-lines
    vendor sends them (keys spaced as the vendor spaces them)."""

    page_size: int = 2

    def last_modified(self, record: Mapping[str, Any]) -> datetime | None:
        try:
            return super().last_modified(record)
        except ValueError:
            return None

    def pages(
        self, window: Window, resume: Position | None = None, *, waiting: Waiting = no_waiting
    ) -> Iterator[Page]:
        for start in range(0, len(self.items), self.page_size):
            records = self.items[start : start + self.page_size]
            yield Page(
                b"".join(json.dumps(record).encode() + b"\n" for record in records),
                [self.last_modified(record) for record in records],
                [record.get("id") for record in records],
                len(records),
            )


def modified(key: str, hours: int) -> dict[str, Any]:
    return {"id": key, "last_modified": isoformat(START + timedelta(hours=hours)), "x": "é"}


def test_json_lines_pages_land_as_they_came_and_records_met_before_are_left_out() -> None:
    # Given a Normal window in which an earlier run landed record "b"'s version
    window = Window(WindowField.LAST_MODIFIED, START, END, False)
    records = [modified(key, hours) for key, hours in (("a", 1), ("b", 2), ("c", 3), ("d", 4))]
    landed = {(START + timedelta(hours=2), key_digest({"id": "b"}, "id"))}
    versions = VersionFilter(
        window=window, overlap=timedelta(minutes=12), landed=landed, digest=key_text_digest
    )
    source = JsonLinesSource(records)
    assert isinstance(source, PageReader)
    # When its pages stream through the version filter
    progress = StreamProgress(source, quiet_heartbeat(), versions)
    landing = pairs(progress.track(window))
    # Then the first page lands without "b", the second as the vendor sent it, byte for byte
    encoded = [json.dumps(record).encode() + b"\n" for record in records]
    assert landing == [(encoded[0], 1), (encoded[2] + encoded[3], 2)]
    assert (versions.counts.duplicates_skipped, progress.read) == (1, 4)
    assert versions.newest == START + timedelta(hours=4)
    # And it remembers, for the next window's overlap, the newest version by its digest
    assert versions.remembered() == [(versions.newest, key_digest(records[-1], "id"))]


def test_records_without_a_usable_stamp_or_key_are_counted_and_the_page_lands_without_them() -> (
    None
):
    window = Window(WindowField.LAST_MODIFIED, START, END, False)
    records = [modified("a", 1), {**modified("b", 2), "last_modified": "soon"}, modified("", 3)]
    versions = VersionFilter(window=window, overlap=timedelta(minutes=12), digest=key_text_digest)
    source = JsonLinesSource(records, page_size=3)
    progress = StreamProgress(source, quiet_heartbeat(), versions)
    assert [chunk.count for chunk in progress.track(window)] == [1]
    assert source.malformed.examples == [
        "record 2: has no usable last-modified date",
        "record 3: has no id (the source's record key)",
    ]
    assert progress.without_key == 1


def test_parts_end_at_the_first_page_end_once_full_and_lose_no_line() -> None:
    # Given pages of 3, 1 and 4 lines, each a place to resume from, cut into parts of 2
    lines = [f'{{"n":{n}}}\n'.encode() for n in range(8)]
    chunks = iter(
        Chunk(b"".join(lines[start:end]), end - start, {"after": end})
        for start, end in ((0, 3), (3, 4), (4, 8))
    )
    # When each part is written in full before the next is asked for
    parts: list[tuple[bytes, PartEnd]] = []
    while not parts or not parts[-1][1].last:
        part = Part(chunks, True, 2, UNBOUNDED)
        written = b"".join(lines for lines, _ in part)
        assert part.end is not None
        parts.append((written, part.end))
    # Then a part runs on to the end of the page that fills it, and no line is lost
    assert [written for written, _ in parts] == [b"".join(lines[:3]), b"".join(lines[3:]), b""]
    assert [end.position for _, end in parts] == [{"after": 3}, {"after": 8}, None]


def test_a_part_is_gzip_json_lines_any_reader_takes() -> None:
    # Given records landed in chunks of lines, one of them not ASCII
    raw = FakeS3(START)
    chunks = [(b'{"id":"1","x":"\xc3\xa9"}\n{"id":"2"}\n', 2), (b'{"id":"3"}\n', 1)]
    # When the sink writes them as one part at the deployment's gzip level
    written = S3RawSink(raw, "raw", gzip_level=RAW_GZIP_LEVEL).write_part("p.jsonl.gz", chunks)
    # Then the object is one gzip member of JSON lines that the stdlib reads back, line by line
    body = raw.objects["p.jsonl.gz"][0]
    with gzip.open(io.BytesIO(body), "rt", encoding="utf-8") as text:
        assert [json.loads(line)["id"] for line in text] == ["1", "2", "3"]
    assert (written.records, written.bytes) == (3, len(body))
    assert written.sha256 == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("level", [4, -1, 9])
def test_a_gzip_level_isal_does_not_have_is_refused_at_cold_start(level: int) -> None:
    with pytest.raises(SettingsError, match=f"RAW_GZIP_LEVEL={level} .* expected 0 to 3"):
        gzip_level(level)
