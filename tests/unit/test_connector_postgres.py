"""The postgres connector's pure parts: its connection, the query it composes, how it reads
dates, and the names it gives to what the driver says. (tests/integration runs it against a
real PostgreSQL.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql

from shared.connectors.base import (
    InvalidConnection,
    InvalidCredentials,
    SourceUnreachable,
    parse_connection,
)
from shared.connectors.endpoints import SourceHostNotAllowed
from shared.connectors.postgres import (
    InsecureAuthentication,
    PostgresConnector,
    SourceQueryFailed,
)
from shared.errors import PermanentError, SourceflowError
from shared.rules.flows import Window, WindowField
from shared.runtime.secrets import Secrets
from tests.fakes import FakeSecretsManager, fake_access, source_secret

PASSWORD = "pw-0c7e5d-not-for-logs"
SECRET = source_secret("partner", "partner-db")
# Where db.partner.example resolves to (a documentation address: never reached).
PARTNER_ADDRESS = "192.0.2.7"
HOST_FORM = {
    "host": "db.partner.example",
    "port": 5433,
    "dbname": "listings",
    "user": "sourceflow_reader",
    "password_secret": SECRET,
    "schema": "sales",
    "table": "Listings",
    "last_modified_column": "updated_at",
    "sold_date_column": "sold_at",
}
START = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
END = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@dataclass
class FakeCursor:
    connection: FakeConnection
    name: str | None
    itersize: int = 0
    description: list[Any] = field(default_factory=list)

    def execute(self, query: Any, params: Any = None) -> None:
        self.connection.executed.append((self.name, query, params))
        if self.connection.error is not None and query != "SET TIME ZONE 'UTC'":
            raise self.connection.error

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        rows = self.connection.rows
        return iter([(row, None) if isinstance(row, str) else row for row in rows])

    def fetchone(self) -> tuple[str, bool] | None:
        return self.connection.key_index

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *_: object) -> None:
        pass


@dataclass
class FakeConnection:
    """A psycopg2 connection that keeps what it executed; its queries raise `error`."""

    error: Exception | None = None
    executed: list[tuple[str | None, Any, Any]] = field(default_factory=list)
    # What the records query answers: each row as PostgreSQL renders to_jsonb(t)::text, and
    # its key as text (a row given as text alone has none).
    rows: list[str | tuple[str, str | None]] = field(
        default_factory=lambda: ['{"listing_id": "L1"}']
    )
    # What the key column's index probe answers: the relation's kind, and whether an index
    # leads with the key column.
    key_index: tuple[str, bool] | None = ("r", True)
    readonly: bool = False
    closed: bool = False
    cancelled: bool = False

    def set_session(self, *, readonly: bool) -> None:
        self.readonly = readonly

    def cursor(self, name: str | None = None) -> FakeCursor:
        return FakeCursor(self, name)

    def close(self) -> None:
        self.closed = True

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeConnect:
    """psycopg2.connect: keeps its arguments; answers with `connection` or raises `error`."""

    connection: FakeConnection = field(default_factory=FakeConnection)
    error: Exception | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, **kwargs: Any) -> FakeConnection:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        return self.connection


def resolve_partner(host: str, port: str, *, type: int) -> list[tuple[Any, ...]]:
    """socket.getaddrinfo as DNS would answer for the partner's host, without a socket."""
    assert host == "db.partner.example", host
    return [(2, type, 6, "", (PARTNER_ADDRESS, int(port)))]


def a_connector(
    connect: FakeConnect | None = None, *, secrets: Secrets | None = None, **changes: Any
) -> PostgresConnector:
    settings = parse_connection("partner", "postgres", {**HOST_FORM, **changes})
    access = fake_access(FakeSecretsManager({SECRET: PASSWORD}))
    connector = PostgresConnector.from_connection(
        "partner", settings, secrets=secrets or access.secrets, hosts=access.hosts
    )
    connector.resolve = resolve_partner
    if connect is not None:
        connector.connect = connect
    return connector


def parts(query: sql.Composed) -> list[sql.Composable]:
    return list(query.seq)


# --- connection ---------------------------------------------------------------------------------


def test_the_connect_arguments_never_hold_the_password() -> None:
    connector = a_connector()
    assert connector.connect_args == {
        "host": "db.partner.example",
        "port": "5433",
        "dbname": "listings",
        "user": "sourceflow_reader",
    }
    assert (connector.schema, connector.table, connector.key_column) == ("sales", "Listings", None)


def test_a_dsn_stands_for_host_port_dbname_and_user() -> None:
    dsn = "postgresql://sourceflow_reader@db.partner.example/listings?sslmode=require"
    form = {
        k: v for k, v in HOST_FORM.items() if k not in ("host", "port", "dbname", "user", "schema")
    }
    settings = parse_connection("partner", "postgres", {**form, "dsn": dsn})
    access = fake_access()
    connector = PostgresConnector.from_connection(
        "partner", settings, secrets=access.secrets, hosts=access.hosts
    )
    # Read by libpq's own parser: what the connection is made with is what was checked.
    assert connector.connect_args == {
        "user": "sourceflow_reader",
        "host": "db.partner.example",
        "dbname": "listings",
        "sslmode": "require",
    }
    assert connector.schema == "public"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dsn": f"postgresql://reader:{PASSWORD}@db/listings"}, "connection.dsn"),
        ({"password": PASSWORD}, "'password' was unexpected"),
        ({"table": 'x"; DROP TABLE t; --'}, "connection.table"),
        ({"key_column": "a b"}, "connection.key_column"),
    ],
)
def test_passwords_and_odd_identifiers_are_refused_without_repeating_them(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidConnection, match=field) as caught:
        parse_connection("partner", "postgres", {**HOST_FORM, **changes})
    assert PASSWORD not in str(caught.value)
    assert "DROP" not in str(caught.value)


# --- the query ----------------------------------------------------------------------------------


def test_the_window_is_bound_read_past_its_end_and_every_name_is_an_identifier() -> None:
    query, bounds = a_connector().records_query(
        Window(WindowField.LAST_MODIFIED, START, END, False)
    )
    assert bounds == {"start": START, "end": END}
    texts = [part.string for part in parts(query) if isinstance(part, sql.SQL)]
    # No upper bound: download counts what is stamped after the window's end.
    assert "".join(texts) == "SELECT to_jsonb(t)::text, NULL FROM  AS t WHERE t. > %(start)s"
    assert [part for part in parts(query) if isinstance(part, sql.Identifier)] == [
        sql.Identifier("sales", "Listings"),
        sql.Identifier("updated_at"),
    ]


def test_an_inclusive_sold_window_filters_on_the_sold_column_and_orders_by_the_key() -> None:
    query, _ = a_connector(key_column="listing_id").records_query(
        Window(WindowField.SOLD_DATE, START, END, True)
    )
    texts = "".join(part.string for part in parts(query) if isinstance(part, sql.SQL))
    assert texts.endswith("t. >= %(start)s AND t. <= %(end)s ORDER BY t.")
    identifiers = [part for part in parts(query) if isinstance(part, sql.Identifier)]
    assert identifiers[2:] == [
        sql.Identifier("sold_at"),
        sql.Identifier("sold_at"),
        sql.Identifier("listing_id"),
    ]


def test_a_backfill_slice_reads_its_range_and_nothing_at_or_after_its_end() -> None:
    query, bounds = a_connector().records_query(
        Window(WindowField.LAST_MODIFIED, START, END, True, end_exclusive=True)
    )
    texts = "".join(part.string for part in parts(query) if isinstance(part, sql.SQL))
    assert texts.endswith("t. >= %(start)s AND t. < %(end)s")
    assert bounds == {"start": START, "end": END}


def test_the_probe_names_the_filter_columns_and_the_key() -> None:
    probe = a_connector(key_column="listing_id").probe_query()
    assert [part for part in parts(probe) if isinstance(part, sql.Identifier)] == [
        sql.Identifier("sales", "Listings")
    ]
    assert "LIMIT 0" in repr(probe)
    for column in ("updated_at", "sold_at", "listing_id"):
        assert f"Identifier('{column}')" in repr(probe)


# --- reading ------------------------------------------------------------------------------------


def test_records_come_through_a_named_cursor_in_a_read_only_utc_session() -> None:
    connect = FakeConnect()
    connector = a_connector(connect, fetch_size=500)
    assert list(connector.records(Window(WindowField.LAST_MODIFIED, START, END, False))) == [
        {"listing_id": "L1"}
    ]
    [call] = connect.calls
    assert call["password"] == PASSWORD
    # Only SCRAM, to the address that was checked (the name resolved once, here)
    assert (call["require_auth"], call["hostaddr"]) == ("scram-sha-256", PARTNER_ADDRESS)
    assert connect.connection.readonly and connect.connection.closed
    names = [name for name, _, _ in connect.connection.executed]
    assert names == [None, "sourceflow_records"]


@pytest.mark.parametrize(
    ("value", "moment"),
    [
        ("2026-11-20T13:00:00+00:00", datetime(2026, 11, 20, 13, tzinfo=UTC)),
        ("2026-11-20T15:00:00+02:00", datetime(2026, 11, 20, 13, tzinfo=UTC)),
        ("2026-11-20T13:00:00", datetime(2026, 11, 20, 13, tzinfo=UTC)),  # timestamp: UTC
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),  # date: midnight UTC
        ("infinity", datetime.max.replace(tzinfo=UTC)),  # stamped in the future for ever
        ("-infinity", None),
        (None, None),
    ],
)
def test_last_modified_reads_what_postgres_renders(value: Any, moment: datetime | None) -> None:
    assert a_connector().last_modified({"updated_at": value}) == moment


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "error", "says"),
    [
        ('FATAL:  password authentication failed for user "r"', InvalidCredentials, SECRET),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.7"', InvalidCredentials, SECRET),
        ('FATAL:  database "listing" does not exist', InvalidConnection, "dbname"),
        ("could not connect to server: Connection refused", SourceUnreachable, "cannot connect"),
        ("timeout expired", SourceUnreachable, "cannot connect"),
    ],
)
def test_a_failed_login_is_named_by_what_the_server_said(
    message: str, error: type[SourceflowError], says: str
) -> None:
    connector = a_connector(FakeConnect(error=psycopg2.OperationalError(message)))
    with pytest.raises(error, match=says) as caught:
        connector.check()
    assert PASSWORD not in str(caught.value)


@dataclass
class RotatingConnect(FakeConnect):
    """The partner's server after the reader's password was rotated: it refuses any other."""

    password: str = ""

    def __call__(self, **kwargs: Any) -> FakeConnection:
        self.calls.append(kwargs)
        if kwargs["password"] != self.password:
            raise psycopg2.OperationalError('FATAL:  password authentication failed for user "r"')
        return self.connection


def test_a_password_rotated_since_it_was_read_is_read_again_and_the_login_tried_once_more() -> None:
    # Given a container that read the password, then the partner rotated it (and its secret)
    secrets_manager = FakeSecretsManager({SECRET: PASSWORD})
    access = fake_access(secrets_manager)
    connector = a_connector(secrets=access.secrets)
    connector.secrets.value(SECRET, key="password", source_id="partner", setting="s")
    rotated = "a-rotated-partner-password"
    secrets_manager.values[SECRET] = rotated
    connect = RotatingConnect(password=rotated)
    connector.connect = connect

    # When the connector reads
    records = list(connector.records(Window(WindowField.LAST_MODIFIED, START, END, False)))

    # Then the login was refused once, the secret read again, and the login tried with it
    assert records == [{"listing_id": "L1"}]
    assert [call["password"] for call in connect.calls] == [PASSWORD, rotated]
    assert secrets_manager.calls == [SECRET, SECRET]


def test_a_login_refused_again_after_the_password_was_read_again_is_reported() -> None:
    secrets_manager = FakeSecretsManager({SECRET: PASSWORD})
    connector = a_connector(secrets=fake_access(secrets_manager).secrets)
    connect = RotatingConnect(password="what-the-secret-does-not-hold")
    connector.connect = connect

    with pytest.raises(InvalidCredentials, match="PostgreSQL refused the login"):
        connector.check()

    assert len(connect.calls) == 2 and secrets_manager.calls == [SECRET, SECRET]


@pytest.mark.parametrize(
    ("driver_error", "error", "says"),
    [
        (psycopg2.errors.UndefinedTable("no relation"), InvalidConnection, "connection.table"),
        (psycopg2.errors.UndefinedColumn("no column"), InvalidConnection, "_column settings"),
        (psycopg2.errors.InsufficientPrivilege("denied"), InvalidCredentials, "GRANT SELECT"),
        (psycopg2.errors.AdminShutdown("shutting down"), SourceUnreachable, "shutting down"),
        (psycopg2.errors.DivisionByZero("division by zero"), SourceQueryFailed, "division"),
    ],
)
def test_a_failed_query_is_named_and_the_connection_closed(
    driver_error: Exception, error: type[SourceflowError], says: str
) -> None:
    connect = FakeConnect(FakeConnection(error=driver_error))
    with pytest.raises(error, match=says):
        list(a_connector(connect).records(Window(WindowField.SOLD_DATE, START, END, True)))
    assert connect.connection.closed


# --- hostile rows (docs/limits.md) -------------------------------------------------------------


def test_a_row_nested_too_deeply_to_read_is_malformed_and_the_others_load() -> None:
    connect = FakeConnect()
    connect.connection.rows = [
        '{"listing_id": "L1"}',
        '{"listing_id": "L2", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"listing_id": "L3"}',
    ]
    connector = a_connector(connect)
    window = Window(WindowField.LAST_MODIFIED, START, END, False)
    assert [r["listing_id"] for r in connector.records(window)] == ["L1", "L3"]
    assert connector.malformed.examples == ["sales.Listings row 2: is nested too deeply to read"]


@pytest.mark.parametrize(
    ("limits", "error_name"),
    [({"max_records": 2}, "TooManyRecords"), ({"max_bytes": 1024}, "TooManyBytes")],
)
def test_a_table_past_the_run_limits_stops_the_run_by_name(
    limits: dict[str, int], error_name: str
) -> None:
    connect = FakeConnect()
    connect.connection.rows = [f'{{"listing_id": "L{i}", "note": "{"x" * 400}"}}' for i in range(5)]
    connector = a_connector(connect, limits=limits)
    with pytest.raises(PermanentError) as caught:
        list(connector.records(Window(WindowField.LAST_MODIFIED, START, END, False)))
    assert caught.value.error_name == error_name


# --- the password goes only to the source, only with SCRAM ---------------------------------------


@pytest.mark.parametrize(
    ("sslmode", "binding"),
    [(None, None), ("prefer", None), ("require", "require"), ("verify-full", "require")],
)
def test_the_login_demands_scram_bound_to_tls_when_tls_is_required(
    sslmode: str | None, binding: str | None
) -> None:
    connector = a_connector(None, sslmode=sslmode) if sslmode else a_connector(None)
    args = connector.login_args()
    assert args["require_auth"] == "scram-sha-256"
    assert args.get("channel_binding") == binding
    assert (args["host"], args["hostaddr"]) == ("db.partner.example", PARTNER_ADDRESS)
    assert "password" not in args


@pytest.mark.parametrize(
    "method", ["a cleartext password", "a hashed password", "an unknown authentication type"]
)
def test_a_server_that_asks_for_the_password_another_way_is_refused_by_name(method: str) -> None:
    # libpq's words when the server asks otherwise than with SCRAM: nothing was sent
    said = (
        'connection to server at "db.partner.example" (192.0.2.7), port 5433 failed: '
        f'authentication method requirement "scram-sha-256" failed: server requested {method}'
    )
    connector = a_connector(FakeConnect(error=psycopg2.OperationalError(said)))
    with pytest.raises(InsecureAuthentication, match="did not offer SCRAM-SHA-256") as caught:
        connector.check()
    assert "pg_hba.conf use scram-sha-256" in str(caught.value)
    assert caught.value.error_name == "InsecureAuthentication"


def test_a_hostile_servers_words_are_quoted_short_on_one_line_without_links() -> None:
    said = (
        'FATAL:  database "x\nclick http://evil.example/fix now' + " y" * 400 + '" does not exist'
    )
    connector = a_connector(FakeConnect(error=psycopg2.OperationalError(said)))
    with pytest.raises(InvalidConnection) as caught:
        connector.check()
    text = str(caught.value)
    assert "\n" not in text and "evil.example" not in text and "[link removed]" in text
    assert len(text) < 400


def test_a_host_that_resolves_to_a_link_local_address_is_refused_before_connecting() -> None:
    # Given a name whose DNS answers with the cloud's metadata address
    connect = FakeConnect()
    connector = a_connector(connect)
    connector.resolve = lambda host, port, *, type: [(2, type, 6, "", ("169.254.169.254", 5433))]
    # When it logs in, Then it is refused by name and nothing was sent
    with pytest.raises(SourceHostNotAllowed, match=r"169\.254\.169\.254, link-local"):
        connector.check()
    assert connect.calls == []


# --- resuming a download, and waiting for the first row ------------------------------------------


def test_a_keyed_table_is_read_in_key_order_after_the_resumed_key() -> None:
    resume = {"after_key": "L7", "read": {"pages": 0, "records": 7, "bytes": 700}}
    query, bounds = a_connector(key_column="listing_id").records_query(
        Window(WindowField.LAST_MODIFIED, START, END, False), resume
    )
    texts = "".join(part.string for part in parts(query) if isinstance(part, sql.SQL))
    assert texts == (
        "SELECT to_jsonb(t)::text, t.::text FROM  AS t WHERE t. > %(start)s"
        " AND (t. > %(after_key)s OR t. IS NULL) ORDER BY t."
    )
    assert bounds == {"start": START, "end": END, "after_key": "L7"}


def test_a_download_may_resume_only_where_the_key_changes() -> None:
    # Given rows in key order: two share a key, and the last two have none
    rows: list[str | tuple[str, str | None]] = [
        ('{"k": 1}', "1"),
        ('{"k": 2, "v": "a"}', "2"),
        ('{"k": 2, "v": "b"}', "2"),
        ('{"k": 3}', "3"),
        ('{"k": null}', None),
        ('{"k": null}', None),
    ]
    connector = a_connector(FakeConnect(FakeConnection(rows=rows)), key_column="k")
    window = Window(WindowField.LAST_MODIFIED, START, END, False)
    # Then a position follows a row only where the next row has another key: never between
    # the rows of one key, nor among the rows without one
    after = [connector.position for _ in connector.records(window)]
    assert [position and position["after_key"] for position in after] == [
        "1",
        None,
        "2",
        "3",
        None,
        None,
    ]
    read = sum(len(row[0]) for row in rows[:3])
    assert after[2] == {"after_key": "2", "read": {"pages": 0, "records": 3, "bytes": read}}
    assert connector.resumable and not a_connector().resumable


@pytest.mark.parametrize(
    ("kind", "indexed", "warned"),
    [
        ("r", False, True),
        ("p", False, True),
        ("m", False, True),
        ("r", True, False),
        ("v", False, False),
    ],
)
def test_a_key_column_without_an_index_is_warned_of(kind: str, indexed: bool, warned: bool) -> None:
    # Given a table (or a view, whose plan sourceflow cannot see) and its key column's index
    connection = FakeConnection(key_index=(kind, indexed))
    connector = a_connector(FakeConnect(connection), key_column="listing_id")
    # When its rows are read, Then a table's unindexed key column is warned of, with the fix
    list(connector.records(Window(WindowField.LAST_MODIFIED, START, END, False)))
    assert bool(connector.warnings) is warned
    if warned:
        [warning] = connector.warnings
        assert "'listing_id' of sales.Listings has no index" in warning
        assert "CREATE INDEX ON sales.Listings (listing_id)" in warning


def test_the_first_fetch_is_waited_for_with_the_query_cancelled_if_the_download_must_stop() -> None:
    # Given a download that says how it waits
    connect = FakeConnect()
    waits: list[Any] = []

    @contextmanager
    def waiting(interrupt: Callable[[], None]) -> Iterator[None]:
        waits.append(interrupt)
        yield

    # When the table is read, Then only the first fetch (the query's start) is waited for,
    # and what ends that wait is the query's cancel
    connector = a_connector(connect)
    list(connector.records(Window(WindowField.LAST_MODIFIED, START, END, False), waiting=waiting))
    [interrupt] = waits
    interrupt()
    assert connect.connection.cancelled
