"""The `s3_files` connector: CSV or JSON-lines objects that a partner drops under a prefix.

connection (contracts/connection-s3-files.v1.schema.json):
{"bucket": "partner-drops", "prefix": "acme/listings/", "format": "csv",
 "last_modified_field": "modified_at", "sold_date_field": "sold_on"}

Objects are listed with ListObjectsV2 (paged) in key order and their bodies streamed line by
line, so neither a long listing nor a large object is held in memory. S3 cannot filter rows, so
each row is placed in the window by its own date field; a row that cannot be placed (not JSON
or CSV, not UTF-8, a missing or unparseable date) is counted in `malformed`, never dropped
silently. Records keep the file's field names; CSV values stay text.

A drop is untrusted (docs/limits.md): a line longer than the source's `max_page_bytes` is
counted as malformed without being held, a JSON line nested past the parser's limit is a line
that is not JSON, bytes that are not UTF-8 spoil only the row that holds them (a CSV field
spanning lines included), and the bytes and rows a run reads are counted against its limits.

A download resumes after any row (`position`): the object, its ETag, the byte offset where the
next row starts and the line it is on (and a CSV object's header). The rest of that object is
read from the offset (a ranged GET, only if the object is still the one read: If-Match), then
the objects listed after it. An object rewritten meanwhile is read again from its start.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from shared.connectors.base import (
    InvalidConnection,
    InvalidCredentials,
    MalformedRows,
    Position,
    SourceUnreachable,
    Waiting,
    no_waiting,
)
from shared.errors import SourceflowError
from shared.rules.flows import Window, WindowField
from shared.rules.limits import DEFAULT_RUN_LIMITS, ReadMeter, RunLimits, run_limits
from shared.runtime.observability import logger
from shared.timefmt import parse_iso

DEFAULT_LAST_MODIFIED_FIELD = "last_modified"
DEFAULT_SOLD_DATE_FIELD = "sold_date"
# S3 keeps LastModified to the second, and the clock that stamped a record's last-modified date
# may run ahead of S3's: only an object written this long before the window opened is surely
# without records modified inside it.
OBJECT_CLOCK_SLACK = timedelta(minutes=5)
_READ_BUFFER_BYTES = 1 << 16
# Rows read and left out (outside the window, malformed) between two check-ins.
CHECK_IN_ROWS = 1000
_REFUSED_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "403",
}


class MalformedRow(ValueError):
    """A row that cannot be placed in the window; its text says why."""


@dataclass
class _Drop:
    """One object as it is read: where the next row starts (`offset`, on line `line` + 1) and,
    once a CSV object's header is read, its field names."""

    key: str
    etag: str
    offset: int = 0
    line: int = 0
    fieldnames: list[str] | None = None

    def restart(self) -> None:
        self.offset, self.line, self.fieldnames = 0, 0, None


_DROP_FIELDS = ("key", "etag", "offset", "line", "fieldnames")


@dataclass
class S3FilesConnector:
    source_id: str
    bucket: str
    prefix: str
    format: str  # csv | jsonl
    last_modified_field: str
    sold_date_field: str
    key_field: str | None
    s3: Any = field(repr=False, compare=False)
    limits: RunLimits = DEFAULT_RUN_LIMITS
    malformed: MalformedRows = field(default_factory=MalformedRows, init=False, compare=False)
    warnings: list[str] = field(default_factory=list, init=False, compare=False)
    resumable = True
    # The drop and the meter of the row last yielded, while `records` waits after it.
    _at: tuple[_Drop, ReadMeter] | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_connection(
        cls, source_id: str, connection: Mapping[str, Any], *, s3: Any
    ) -> S3FilesConnector:
        """From a connection that passed its schema (`shared.connectors.parse_connection`)."""
        return cls(
            source_id,
            connection["bucket"],
            connection.get("prefix", ""),
            connection["format"],
            connection.get("last_modified_field", DEFAULT_LAST_MODIFIED_FIELD),
            connection.get("sold_date_field", DEFAULT_SOLD_DATE_FIELD),
            connection.get("key_field"),
            s3,
            run_limits(connection),
        )

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def check(self) -> None:
        """One listing of at most one key: the bucket exists and may be listed. No object is
        read: validation may only list (GetObject, and a key_field its records lack, are
        proved by download's first object)."""
        try:
            self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"list {self.location}") from exc

    def records(
        self, window: Window, resume: Position | None = None, *, waiting: Waiting = no_waiting
    ) -> Iterator[dict[str, Any] | None]:
        self.malformed, self._at = MalformedRows(), None
        date_field = (
            self.last_modified_field
            if window.field is WindowField.LAST_MODIFIED
            else self.sold_date_field
        )
        meter = ReadMeter(self.source_id, self.limits)
        if resume is not None:
            meter.resume(resume["read"])
        left_out = 0
        for drop in self._drops(window, resume):
            for where, row in self._rows(drop, meter):
                meter.record()
                try:
                    placed = row_in_window(row, date_field, window)
                except MalformedRow as exc:
                    self.malformed.add(where, str(exc))
                    placed = False
                if not placed:
                    # A drop of mostly older rows (a partner's daily snapshot) checks in now
                    # and then, so that its download stays alive and may stop in time.
                    left_out += 1
                    if left_out % CHECK_IN_ROWS:
                        continue
                self._at = (drop, meter)
                yield row if placed else None
                self._at = None

    @property
    def position(self) -> Position | None:
        if self._at is None:
            return None
        drop, meter = self._at
        return {**{name: getattr(drop, name) for name in _DROP_FIELDS}, "read": meter.counts()}

    def last_modified(self, record: Mapping[str, Any]) -> datetime | None:
        try:
            return record_time(record, self.last_modified_field)
        except MalformedRow:
            return None  # only Sold windows load such rows, and they leave the cursor alone

    def _drops(self, window: Window, resume: Position | None) -> Iterator[_Drop]:
        """The objects that may hold records of the window, in key order; after `resume`, the
        rest of its object first."""
        after = {}
        if resume is not None:
            yield _Drop(**{name: resume[name] for name in _DROP_FIELDS})
            after = {"StartAfter": resume["key"]}
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix, **after
        )
        try:
            for page in pages:
                for listed in page.get("Contents", []):
                    if listed["Key"].endswith("/"):
                        continue  # a console "folder", not a drop
                    if may_hold_window(listed["LastModified"], window):
                        yield _Drop(listed["Key"], listed["ETag"])
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"list {self.location}") from exc

    def _rows(self, drop: _Drop, meter: ReadMeter) -> Iterator[tuple[str, dict[str, Any]]]:
        """(where, row) for each row of the object from where `drop` stands; rows that do not
        parse are counted. `drop` follows: after each row, where the next one starts."""
        where = f"s3://{self.bucket}/{drop.key}"
        body = self._body(drop)
        if body is None:
            return
        raw = self._body_lines(body, drop, meter)
        lines = _Lines(raw, where, meter.limits.max_page_bytes, drop.line)
        if self.format == "jsonl":
            yield from jsonl_rows(lines, self.malformed)
            return
        for placed in csv_rows(lines, self.malformed, drop.fieldnames):
            drop.fieldnames = drop.fieldnames or list(placed[1])
            yield placed

    def _body(self, drop: _Drop) -> Any:
        """The object's body from where `drop` stands; None when there is nothing to read."""
        where = f"s3://{self.bucket}/{drop.key}"
        ranged = {"Range": f"bytes={drop.offset}-", "IfMatch": drop.etag} if drop.offset else {}
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=drop.key, **ranged)["Body"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "NoSuchKey":
                # Deleted between the listing and now: the partner took the drop back.
                logger.info("drop vanished before it was read", extra={"key": drop.key})
                return None
            if code == "InvalidRange":
                return None  # the earlier read ended with the object's last row
            if code == "PreconditionFailed":
                # Rewritten since the earlier read: a new drop under the same key.
                logger.warning("drop rewritten since it was read: read again", extra={"key": where})
                drop.restart()
                return self._body(drop)
            raise self._error(exc, f"read {where}") from exc
        except BotoCoreError as exc:
            raise self._error(exc, f"read {where}") from exc

    def _body_lines(self, body: Any, drop: _Drop, meter: ReadMeter) -> Iterator[bytes | None]:
        """The body's lines as it streams in, each counted against the run's bytes and moving
        `drop` past it; None in place of a line longer than the source's max_page_bytes, which
        is skipped without being held."""
        cap = meter.limits.max_page_bytes
        try:
            # Closing the reader closes the body, and with it the HTTP response.
            with io.BufferedReader(body, _READ_BUFFER_BYTES) as stream:
                while line := stream.readline(cap + 1):
                    meter.read(len(line))
                    drop.offset += len(line)
                    drop.line += 1
                    if len(line) <= cap:
                        yield line
                        continue
                    while not line.endswith(b"\n") and (line := stream.readline(cap + 1)):
                        meter.read(len(line))
                        drop.offset += len(line)
                    yield None
        except BotoCoreError as exc:
            raise self._error(exc, f"read s3://{self.bucket}/{drop.key}") from exc

    def _error(self, exc: ClientError | BotoCoreError, action: str) -> SourceflowError:
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        if code == "NoSuchBucket":
            return InvalidConnection(
                f"source {self.source_id!r}: connection.bucket = {self.bucket!r} does not exist; "
                "fix connection.bucket"
            )
        if code in _REFUSED_CODES:
            grant = (
                "s3:ListBucket on the bucket to sourceflow's validation and download"
                if action.startswith("list")
                else "s3:GetObject on its objects to sourceflow's download"
            )
            return InvalidCredentials(
                f"source {self.source_id!r}: S3 refused to {action} ({code}); grant {grant}"
            )
        return SourceUnreachable(
            f"source {self.source_id!r}: cannot {action}: {code or type(exc).__name__}"
        )


def may_hold_window(object_last_modified: datetime, window: Window) -> bool:
    """Whether an object may hold records of the window, judged by its S3 LastModified.

    An object last written before a last-modified window opened cannot hold a record modified
    inside it. Nothing else can be concluded: an object written after the window closed may
    still hold records modified inside it, and sold dates say nothing about when a file was
    written.
    """
    if window.field is not WindowField.LAST_MODIFIED:
        return True
    return object_last_modified >= window.start - OBJECT_CLOCK_SLACK


def row_in_window(row: Mapping[str, Any], date_field: str, window: Window) -> bool:
    """Whether the window reads the row (`Window.fetches`: a last-modified window is read past
    its end). A row without a sold date is simply unsold; a row without a last-modified date,
    or with a date that does not parse, is malformed."""
    if _is_empty(row.get(date_field)) and window.field is WindowField.SOLD_DATE:
        return False
    return window.fetches(record_time(row, date_field))


def record_time(row: Mapping[str, Any], date_field: str) -> datetime:
    """A row's date: an ISO-8601 date-time with a time zone, or a date (midnight UTC)."""
    value = row.get(date_field)
    if _is_empty(value):
        raise MalformedRow(f"has no {date_field}")
    if not isinstance(value, str):
        raise MalformedRow(f"{date_field} is {type(value).__name__}, not a date text")
    try:
        if len(value) == len("2024-05-01"):
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        return parse_iso(value)
    except ValueError:  # out of range included (shared.timefmt.parse_iso)
        raise MalformedRow(
            f"{date_field} = {value[:40]!r} is not an ISO-8601 date, or date-time with a zone"
        ) from None


def _is_empty(value: Any) -> bool:
    return value is None or value == ""


# What a line too long to hold reads as: the replacement character, one field of one row.
_DROPPED_LINE = "\ufffd"


class _Lines:
    """An object's lines as text, numbered, and what spoils the row they are read into.

    Bytes that are not UTF-8 are kept as lone surrogates (surrogateescape) rather than dropping
    their line: a CSV field may span lines, and a line missing from the middle of one would
    derail every row after it. A line longer than the limit arrives as None and reads as empty.
    Either way the parser counts the row that holds it as malformed (`take_problem`)."""

    def __init__(
        self, raw: Iterable[bytes | None], where: str, max_line_bytes: int, lines_before: int = 0
    ) -> None:
        self._raw, self._where, self._max_line_bytes = raw, where, max_line_bytes
        self.number = lines_before
        self._problem: str | None = None

    def __iter__(self) -> Iterator[str]:
        for number, line in enumerate(self._raw, start=self.number + 1):
            self.number = number
            if line is None:
                self._problem = self._problem or (
                    f"is a line over {self._max_line_bytes:,} bytes (the source's "
                    "connection.limits.max_page_bytes)"
                )
                # Not empty: a CSV reader passes over an empty line, and the problem would
                # spoil the row after it instead.
                yield _DROPPED_LINE
                continue
            # A byte-order mark (spreadsheet exports) is not part of the first field name.
            encoding = "utf-8-sig" if number == 1 else "utf-8"
            try:
                yield line.decode(encoding)
            except UnicodeDecodeError:
                self._problem = self._problem or "is not UTF-8"
                yield line.decode(encoding, "surrogateescape")

    def take_problem(self) -> str | None:
        """What spoils the row read since the last call (None: nothing), forgotten once told."""
        problem, self._problem = self._problem, None
        return problem

    @property
    def at(self) -> str:
        return f"{self._where} line {self.number}"


def jsonl_rows(lines: _Lines, malformed: MalformedRows) -> Iterator[tuple[str, dict[str, Any]]]:
    for text in lines:
        if problem := lines.take_problem():
            malformed.add(lines.at, problem)
            continue
        if not text.strip():
            continue  # a trailing newline, or a blank line between records
        try:
            # orjson refuses nesting past 1024 levels by name, where json would recurse.
            row = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            malformed.add(lines.at, f"is not JSON ({exc})")
            continue
        if not isinstance(row, dict):
            malformed.add(lines.at, "is not a JSON object")
            continue
        yield lines.at, row


def csv_rows(
    lines: _Lines, malformed: MalformedRows, fieldnames: list[str] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows under the object's header row (`fieldnames`, when the lines start after it); a
    quoted field may span lines."""
    reader = csv.DictReader(lines, fieldnames=fieldnames)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            lines.take_problem()
            malformed.add(lines.at, f"is not CSV ({exc})")
            continue
        if problem := lines.take_problem():
            malformed.add(lines.at, problem)
        elif None in row:  # DictReader files surplus fields under the key None
            malformed.add(lines.at, "has more fields than the header")
        elif None in row.values():  # and gives missing fields the value None
            malformed.add(lines.at, "has fewer fields than the header")
        else:
            yield lines.at, row
