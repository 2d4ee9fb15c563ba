"""services.download.service.PartUploads: a part goes up, and is committed, on a thread of its own
while the next part is read; one part at a time, in order, and a failure is not lost."""

from __future__ import annotations

import threading
from functools import partial

import pytest

from services.download.adapters import SpooledPart, WrittenObject
from services.download.service import PartUploads
from shared.errors import DuplicateDelivery, TransientError


def spooled(name: str, log: list[str], *, upload_fails: bool = False) -> SpooledPart:
    def upload() -> None:
        log.append(f"upload {name}")
        if upload_fails:
            raise TransientError(f"cannot write s3://raw/{name}")

    return SpooledPart(
        WrittenObject(name, 1, 1, "0" * 64), upload, lambda: log.append(f"discard {name}")
    )


def test_each_part_is_committed_after_its_upload_and_parts_go_in_order() -> None:
    log: list[str] = []
    with PartUploads() as uploads:
        for name in ("p0", "p1", "p2"):
            uploads.submit(spooled(name, log), partial(log.append, f"commit {name}"))
        uploads.submit(None, partial(log.append, "commit nothing"))

    assert log == [
        "upload p0", "commit p0", "upload p1", "commit p1", "upload p2", "commit p2",
        "commit nothing",
    ]  # fmt: skip


def test_the_next_part_is_read_while_one_goes_up() -> None:
    going_up, read = threading.Event(), threading.Event()

    def upload() -> None:
        going_up.set()
        assert read.wait(10), "the caller was kept waiting for the upload"

    with PartUploads() as uploads:
        uploads.submit(SpooledPart(WrittenObject("p0", 1, 1, ""), upload, lambda: None))
        assert going_up.wait(10)
        read.set()  # the caller goes on (reads the next part) while p0 goes up


def test_a_failed_upload_is_raised_at_the_next_part_and_that_part_is_dropped() -> None:
    log: list[str] = []
    with PartUploads() as uploads:
        uploads.submit(spooled("p0", log, upload_fails=True), lambda: log.append("commit p0"))
        with pytest.raises(TransientError, match="cannot write s3://raw/p0"):
            uploads.submit(spooled("p1", log), lambda: log.append("commit p1"))

    assert log == ["upload p0", "discard p1"]  # p0 never committed, p1 never uploaded


def test_a_commit_that_finds_the_claim_taken_over_stops_the_download_at_its_end() -> None:
    def taken_over() -> None:
        raise DuplicateDelivery("another delivery took over the download; standing down")

    with pytest.raises(DuplicateDelivery, match="took over"), PartUploads() as uploads:
        uploads.submit(spooled("p0", []), taken_over)


def test_a_download_failing_elsewhere_waits_for_the_part_in_flight_and_raises_its_own_error() -> (
    None
):
    log: list[str] = []
    release = threading.Event()

    def slow_upload() -> None:
        assert release.wait(10)
        log.append("upload p0")
        raise TransientError("the bucket is gone too")

    with pytest.raises(RuntimeError, match="the vendor went away"), PartUploads() as uploads:
        uploads.submit(SpooledPart(WrittenObject("p0", 1, 1, ""), slow_upload, lambda: None))
        release.set()
        raise RuntimeError("the vendor went away")

    assert log == ["upload p0"]  # the upload ended before the block was left
