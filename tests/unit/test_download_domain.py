"""services.download.domain: Heartbeat, window_from_plan, and what StreamProgress lands."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.download.adapters import S3RawSink
from services.download.domain import (
    FIRST_BEAT_RETRY_PAUSES,
    Heartbeat,
    LockLost,
    StreamProgress,
    cut_parts,
    window_from_plan,
)
from services.download.settings import gzip_level
from shared.connectors.base import Page, PageReader
from shared.errors import TaskOver
from shared.rules.flows import Window, WindowField
from shared.rules.versions import VersionFilter, key_digest, key_text_digest
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
    written = S3RawSink(raw, "raw").write_part("part-00000.jsonl.gz", progress.track(WINDOW))
    # Then the others land, and those two are counted as malformed, with why
    lines = gzip.decompress(raw.objects["part-00000.jsonl.gz"][0]).splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["1", "4"]
    assert written.records == 2
    assert connector.malformed.examples == [
        "record 2: cannot be landed (Recursion limit reached)",
        "record 3: cannot be landed (Integer exceeds 64-bit range)",
    ]


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

    def pages(self, window: Window) -> Iterator[Page]:
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
    landing = list(progress.track(window))
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
    assert [count for _, count in progress.track(window)] == [1]
    assert source.malformed.examples == [
        "record 2: has no usable last-modified date",
        "record 3: has no id (the source's record key)",
    ]
    assert progress.without_key == 1


def test_parts_are_cut_at_their_size_across_pages_and_lose_no_line() -> None:
    # Given pages of 3, 1 and 4 lines, cut into parts of 2
    lines = [f'{{"n":{n}}}\n'.encode() for n in range(8)]
    pages = iter([(b"".join(lines[:3]), 3), (lines[3], 1), (b"".join(lines[4:]), 4)])
    # When each part is written in full before the next is asked for
    parts = [list(part) for part in cut_parts(pages, 2)]
    # Then every part holds 2 lines, in order
    assert [b"".join(chunk for chunk, _ in part) for part in parts] == [
        b"".join(lines[n : n + 2]) for n in range(0, 8, 2)
    ]
    assert [sum(count for _, count in part) for part in parts] == [2, 2, 2, 2]


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
