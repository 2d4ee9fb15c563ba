"""What every connector is and shares: the Connector protocol (and `PageReader`, a connector
that hands over its records a page of JSON lines at a time), the rows it could not load, where a
download may resume its stream, its named errors, and its connection checked against its type's
schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from shared.errors import PermanentError, TransientError
from shared.rules.flows import Window
from shared.rules.limits import UnreadableJson
from shared.runtime import contracts

SOURCE_TYPES = frozenset({"http_api", "s3_files", "postgres"})
# A run reports every malformed row in its count, but describes only the first few.
MALFORMED_EXAMPLES = 20


@dataclass
class MalformedRows:
    """Rows a connector could not load (unparseable, or without a usable date in the window's
    field): counted and described so that the run reports them rather than dropping them."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        if len(self.examples) < MALFORMED_EXAMPLES:
            self.examples.append(f"{where}: {reason}")

    def plus(self, later: MalformedRows) -> MalformedRows:
        """These rows and the ones a later read (a continued download) met."""
        examples = [*self.examples, *later.examples][:MALFORMED_EXAMPLES]
        return MalformedRows(self.count + later.count, examples)


Position = dict[str, Any]
"""Where a connector's stream resumes: a JSON object only the connector reads (a page token,
an object key and offset, a table key), with the counts its limits have met so far."""

Waiting = Callable[[Callable[[], None]], AbstractContextManager[None]]
"""`waiting(interrupt)` wraps a wait for the source that may rightly last long (a partner
table's query sorting before its first row): the download stays alive through it, and calls
`interrupt` (say, cancel the query) if it must stop meanwhile."""


def no_waiting(interrupt: Callable[[], None]) -> AbstractContextManager[None]:
    return nullcontext()


class Connector(Protocol):
    def check(self) -> None:
        """Prove, without reading records, that the source answers and accepts the credentials.

        Raises a named PermanentError that says what to fix (InvalidConnection,
        InvalidCredentials, SecretNotFound, …), or SourceUnreachable (transient).
        """
        ...

    def records(
        self, window: Window, resume: Position | None = None, *, waiting: Waiting = no_waiting
    ) -> Iterator[dict[str, Any] | None]:
        """Every record in the window, in the source's order; a last-modified window is read
        past its end (`Window.reads_past_end`): download decides what lands. With `resume`, a
        `position` an earlier read gave: the records after it. None in place of a record is a
        check-in during a long stretch the connector read and left out (rows of a drop outside
        the window, an empty page): the download heartbeats, and may stop there (`position`)."""
        ...

    @property
    def position(self) -> Position | None:
        """Where a later `records(window, resume=...)` continues after the record (or check-in)
        last yielded; None when the stream cannot resume there (inside an API's page)."""
        ...

    @property
    def resumable(self) -> bool:
        """Whether `position` is ever given (a table without a key column has none)."""
        ...

    def last_modified(self, record: Mapping[str, Any]) -> datetime | None:
        """The record's last-modification time, which the LMD cursor follows."""
        ...

    @property
    def key_field(self) -> str | None:
        """The field that identifies a record across its versions; None: the whole record
        (a source without a key, whose every change is another record)."""
        ...

    @property
    def malformed(self) -> MalformedRows:
        """The rows the latest `records` call skipped, and why."""
        ...

    @property
    def warnings(self) -> list[str]:
        """What an operator should hear about the latest `records` call although it worked
        (a partner table's key column without an index)."""
        ...


# JSON lines as bytes: a page's as it was read (a bytearray), or lines made of records.
Lines = bytes | bytearray


@dataclass(frozen=True)
class Page:
    """Records a page at a time, as they land: `lines` holds them as JSON lines, each ending in
    a newline, in the source's order; beside each, what download decides it by: its
    last-modified stamp (None: none usable) and what identifies it (the value of its key
    field, None or "" when it has none; the whole record for a source without a key field).
    `read` counts the records the page stands for, including those the connector counted as
    malformed and left out. `position`: where the stream resumes after the page (None: it
    cannot resume there)."""

    lines: Lines
    stamps: list[datetime | None]
    keys: list[Any]
    read: int
    position: Position | None = None


@runtime_checkable
class PageReader(Connector, Protocol):
    """A connector that reads its source a page of JSON lines at a time, without a record
    ever becoming a dict: what it receives lands as it came (a JSON-lines API, say)."""

    def pages(
        self, window: Window, resume: Position | None = None, *, waiting: Waiting = no_waiting
    ) -> Iterator[Page]:
        """`records(window, resume)`, as pages, each with the position after it."""
        ...


class UnsupportedSourceType(PermanentError):
    error_name = "UnsupportedSourceType"


class InvalidConnection(PermanentError):
    error_name = "InvalidConnection"


class InvalidCredentials(PermanentError):
    error_name = "InvalidCredentials"


class SourceUnreachable(TransientError):
    """The source did not answer (refused, timed out, connection lost): worth another try."""

    error_name = "SourceUnreachable"


def require_supported(source_id: str, source_type: str) -> None:
    if source_type not in SOURCE_TYPES:
        raise UnsupportedSourceType(
            f"source {source_id!r}: source_type {source_type!r} is not supported; "
            f"expected one of {sorted(SOURCE_TYPES)}"
        )


def connection_contract(source_type: str) -> str:
    """The name of the contract a `source_type`'s connection follows (contract names have no
    underscores)."""
    return "connection-" + source_type.replace("_", "-")


def secret_settings(source_type: str) -> tuple[str, ...]:
    """The settings of a `source_type`'s connection that name a secret: those its schema
    declares as secret references."""
    properties = contracts.schema_of(connection_contract(source_type))["properties"]
    return tuple(
        setting
        for setting, declared in properties.items()
        if str(declared.get("$ref", "")).endswith("/secret_reference")
    )


def parse_connection(source_id: str, source_type: str, connection: Any) -> dict[str, Any]:
    """The source's `connection`, checked against its type's schema.

    The problems never repeat the offending values: a password pasted into the wrong setting
    must not reach the ledger through this message.
    """
    require_supported(source_id, source_type)
    contract = connection_contract(source_type)
    if isinstance(connection, UnreadableJson):
        problems = [f"$: is {connection.reason}"]
    elif isinstance(connection, Mapping):
        problems = contracts.violations(connection, contract, echo_values=False)
    else:
        problems = ["$: is not a JSON object"]
    if problems:
        raise InvalidConnection(
            f"source {source_id!r}: its {source_type} connection is not valid: "
            + "; ".join("connection" + problem.removeprefix("$") for problem in problems)
            + f"; fix public.source.connection (see contracts/{contract}.v1.schema.json)"
        )
    return dict(connection)
