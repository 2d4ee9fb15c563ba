"""The check of a JSON-lines page, inline or in a process of its own (shared.connectors.page_check):
the same outcome wherever it runs, in the order the pages came, and a checker that dies or is
closed mid-page never loses a page or hangs the download."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

from shared.connectors.page_check import LinesCheck, PageChecker, stamps_of

CHECK = LinesCheck("id", "last_modified")


def page(*records: Any) -> bytearray:
    return bytearray(b"".join(json.dumps(record).encode() + b"\n" for record in records))


def a_record(key: Any, stamp: Any = "2026-11-22T10:00:00Z") -> dict[str, Any]:
    return {"id": key, "last_modified": stamp, "note": "é"}


PAGES = [
    page(a_record("1"), a_record("2", "2026-11-22T11:00:00.123456+01:00")),
    page(a_record(7), a_record(2.5), a_record({"a": [1, None]}), a_record(None), a_record(True)),
    page(a_record("3", None), a_record("4", "not a date"), a_record("5", 17)),
    bytearray(),
    bytearray(b'{"id": "6"} {"id": "7"}\n'),  # two values on one line: not one pass
    bytearray(b'{"id":\n "8"}\n'),  # a value over two lines
    bytearray(b'{"id": "\xff"}\n'),  # not UTF-8
    page(a_record(2**70)),  # a key msgpack cannot carry: checked by the download itself
]


def test_the_inline_check_reads_stamps_in_utc_and_keys_as_json_has_them() -> None:
    stamps, keys = CHECK(PAGES[0]) or ([], [])
    assert keys == ["1", "2"]
    assert stamps == [
        datetime(2026, 11, 22, 10, tzinfo=UTC),
        datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC),
    ]
    assert CHECK(PAGES[2]) == ([None, None, None], ["3", "4", "5"])
    assert [CHECK(body) for body in PAGES[4:7]] == [None, None, None]
    assert stamps_of(["2026-11-22T10:00:00"]) == [None]  # no zone: no stamp


def test_a_checker_process_gives_each_page_what_the_inline_check_gives_in_order() -> None:
    checker = PageChecker(CHECK)
    try:
        reader = threading.Thread(target=lambda: [checker.submit(body) for body in PAGES])
        reader.start()
        outcomes = [checker.result() for _ in PAGES]
        reader.join()
    finally:
        checker.close()
    # Every page it could check, as the inline check has it (the same types: UTC datetimes, and
    # keys as JSON has them); the others left to the download (None), never a wrong outcome
    inline = [CHECK(body) for body in PAGES]
    assert outcomes[:4] == inline[:4]
    assert [type(key) for key in outcomes[1][1]] == [int, float, dict, type(None), bool]  # type: ignore[index]
    assert all(stamp is None or stamp.tzinfo is UTC for stamp in outcomes[0][0])  # type: ignore[index]
    assert outcomes[4:] == [None] * 4
    assert inline[7] is not None  # the page left to the download does check there


def test_pages_given_to_a_checker_that_died_are_left_to_the_download() -> None:
    checker = PageChecker(CHECK)
    try:
        checker.submit(PAGES[0])
        assert checker.result() == CHECK(PAGES[0])
        checker._process.kill()
        checker._process.join()
        checker.submit(PAGES[1])  # not told: it is gone
        assert checker.result() is None
        assert checker.result() is None
    finally:
        checker.close()


def test_a_checker_closed_while_pages_are_on_their_way_ends_without_hanging() -> None:
    # Given a reading thread that keeps handing over pages, and no one taking the outcomes, so
    # that the checker and then the reading thread are stuck writing
    checker = PageChecker(CHECK)
    big = page(*(a_record(str(n)) for n in range(20_000)))
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            checker.submit(big)

    reader = threading.Thread(target=read)
    reader.start()
    # When the download closes it
    checker.close()
    stop.set()
    # Then the process is gone and the reading thread's next page is not written anywhere
    reader.join(timeout=30)
    assert not reader.is_alive()
    checker.submit(big)


def test_a_checker_whose_download_died_ends_with_it() -> None:
    # Given a download process (a fork of this one) with a checker, killed mid-read
    read, write = os.pipe()
    download = os.fork()
    if download == 0:  # the download: its checker's pid for the test, then a page, then death
        checker = PageChecker(CHECK)
        os.write(write, str(checker._process.pid).encode())
        checker.submit(PAGES[0])
        os.kill(os.getpid(), signal.SIGKILL)
    os.close(write)
    checker_pid = int(os.read(read, 32))
    os.close(read)
    os.waitpid(download, 0)
    # Then its checker, no longer handed pages, ends (it is not this process's child: it is
    # gone once signal 0 finds no such process)
    deadline = time.monotonic() + 60
    while _alive(checker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(checker_pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for init is gone as well
        return stat.read().split(") ")[1][0] != "Z"
