"""The check of a page of JSON lines — the proof that each line is one JSON object, and each
line's stamp and key — on the download's thread (`LinesCheck`), or in a process of its own
(`PageChecker`) while the download lands the page before.

The check is one msgspec pass over the page, which holds the GIL: most of the CPU a JSON-lines
download spends in Python (docs/performance.md, section 1). In a process of its own it runs on
another core. The process is forked when a download starts reading (Lambda has no /dev/shm,
so no multiprocessing Queue or Pool: a Process and two Pipes) and is handed each page as it
comes in, in the reading order; it sends back each page's stamps and keys, or nothing when the
page needs more than the one pass (a line that is not one JSON object, a key msgpack cannot
carry), and the download then checks that page itself. A checker that dies leaves the download
checking every page itself: the outcome never depends on where a page was checked.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from operator import attrgetter
from typing import Any

import msgspec

from shared.timefmt import parse_iso

Checked = tuple[list[datetime | None], list[Any]]
"""A page's stamps (None: a line without a usable one) and keys, a line at a time."""


class LinesCheck:
    """The one-pass check of a page of JSON lines whose records have their key in `key_field`
    and their stamp in `stamp_field`: every other field is skipped (but parsed)."""

    def __init__(self, key_field: str, stamp_field: str) -> None:
        self._fields = msgspec.json.Decoder(list[_record_fields(key_field, stamp_field)])  # type: ignore[misc]

    def __call__(self, body: bytearray) -> Checked | None:
        """Each line's stamp and key, if every line is one JSON object in UTF-8 (the page's
        lines made a JSON array, decoded in one pass); None if not. `body` ends in a newline
        (or is empty)."""
        if not body.isascii():
            try:
                body.decode()  # msgspec does not look into the text it skips
            except UnicodeDecodeError:
                return None
        # One copy of the page, edited in place: memory bandwidth is what a page costs.
        array = body.replace(b"\n", b",")
        array[-1:] = b"]"  # in place of the last line's newline (none: an empty page)
        array[0:0] = b"["
        try:
            fields = self._fields.decode(array)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            return None
        # The lines counted as what a copy without them lacks: 3x as fast as bytearray.count.
        if len(fields) != len(body) - len(body.replace(b"\n", b"")):
            return None  # a line held more than one value, or a value spanned lines
        return stamps_of(list(map(_STAMP, fields))), list(map(_KEY, fields))


def _record_fields(key_field: str, stamp_field: str) -> type[msgspec.Struct]:
    """What a JSON-lines page is decoded into, a record at a time: its key and its stamp, as
    JSON has them (every other field is skipped)."""
    fields = {"key": key_field, "stamp": stamp_field}
    if key_field == stamp_field:  # the stamp is the key: one field, read twice
        return msgspec.defstruct("RecordStamp", [("stamp", Any, None)], rename=fields)
    return msgspec.defstruct(
        "RecordFields", [("key", Any, None), ("stamp", Any, None)], rename=fields
    )


def stamp_of(value: Any) -> datetime | None:
    """A record's last-modified date; None if it has none, or one that does not parse."""
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None  # download counts the record as malformed


def stamps_of(values: list[Any]) -> list[datetime | None]:
    """`stamp_of` each value; the common case (every value a UTC date-time) in one pass."""
    try:
        stamps = list(map(datetime.fromisoformat, values))
    except (TypeError, ValueError):
        return list(map(stamp_of, values))
    if set(map(_TZINFO, stamps)) == {UTC}:
        return stamps  # type: ignore[return-value]
    return list(map(stamp_of, values))


_TZINFO = attrgetter("tzinfo")
_STAMP, _KEY = attrgetter("stamp"), attrgetter("key")


class PageChecker:
    """`check`, run in a forked process of its own on the pages a reading thread `submit`s, in
    that order; `result` gives each page's outcome to the download's thread in the same order
    (None: check the page here). `close` ends the process, whatever it is doing."""

    def __init__(self, check: Callable[[bytearray], Checked | None]) -> None:
        context = multiprocessing.get_context("fork")
        pages_in, self._pages = context.Pipe(duplex=False)
        self._results, results_out = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_serve,
            args=(check, pages_in, results_out, (self._pages, self._results)),
            name="page-check",
            daemon=True,
        )
        for pipe in (self._pages, self._results):
            _widen(pipe)
        self._process.start()
        pages_in.close()
        results_out.close()
        # `submit` (the reading thread) and `close` (the download's) both use the pages' pipe.
        self._lock = threading.Lock()
        self._closed = False
        self._decode = msgspec.msgpack.Decoder(tuple[list[datetime | None], list[Any]])

    def submit(self, body: bytearray) -> None:
        """Hand a page to the process (a dead one is not told: its results say so)."""
        with self._lock:
            if self._closed:
                return
            with suppress(OSError):  # the process is gone: `result` finds out
                self._pages.send_bytes(body)

    def result(self) -> Checked | None:
        """The outcome of the oldest page submitted and not yet taken; None (check it here) if
        the process could not check it, or is gone."""
        try:
            answer = self._results.recv_bytes()
        except (EOFError, OSError):
            return None
        return self._decode.decode(answer) if answer else None

    def close(self) -> None:
        # Killed first: a reading thread writing a page to it is then told at once.
        self._process.kill()
        self._process.join()
        with self._lock:
            self._closed = True
            self._pages.close()
        self._results.close()
        self._process.close()


# A pipe's buffer, if the system allows it (Linux's pipe-max-size, 1 MiB by default): a page
# goes through in a few writes, and a page's outcome (~300 KB for 10,000 records) waits in it
# without the checker waiting for the download to take it.
_PIPE_BYTES = 1 << 20


def _widen(pipe: Connection) -> None:
    with suppress(OSError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def _serve(
    check: Callable[[bytearray], Checked | None],
    pages: Connection,
    results: Connection,
    parents: tuple[Connection, ...],
) -> None:
    """The checker process: each page's outcome, msgpack-encoded (empty: check it there),
    until the pages end — when the download closes its end, or dies. It ends with os._exit:
    it is a fork of a process with threads, and touches nothing of the parent's beyond its
    pipes."""
    encode = msgspec.msgpack.Encoder().encode
    try:
        for end in parents:
            end.close()  # or the pages would never end while this process lives

        while True:
            page = bytearray(pages.recv_bytes())
            try:
                checked = check(page)
                answer = encode(checked) if checked is not None else b""
            except Exception:  # any page it cannot check is checked by the download itself
                answer = b""
            results.send_bytes(answer)
    except (EOFError, OSError):
        pass
    finally:
        os._exit(0)
