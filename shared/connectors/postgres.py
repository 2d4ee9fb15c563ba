"""The `postgres` connector: a table or view in another PostgreSQL database.

connection (contracts/connection-postgres.v1.schema.json):
{"host": "db.partner.example", "port": 5432, "dbname": "listings", "user": "sourceflow_reader",
 "password_secret": "sourceflow/prod/sources/partner/partner-db", "schema": "public",
 "table": "listings",
 "last_modified_column": "updated_at", "sold_date_column": "sold_at", "key_column": "listing_id"}
or a libpq "dsn" in place of host, port, dbname and user; the password is only ever referenced.

The password goes only to the connection's own host, and only with SCRAM-SHA-256 (libpq's
require_auth): a server that asks for it in clear text (or as md5) is refused by name before
anything is sent, and with TLS required the SCRAM exchange is bound to the TLS channel
(channel_binding=require), so that a man in the middle cannot relay it. The libpq settings are
read by libpq's own parser and a host name is resolved, checked and pinned (hostaddr) before
connecting (shared.connectors.endpoints).

Rows are read through a server-side (named) cursor, `fetch_size` rows per round trip, with the
window's filter in the WHERE clause as bound parameters. Schema, table and columns are quoted
as identifiers (`psycopg2.sql.Identifier`), never interpolated. PostgreSQL renders each row
(`to_jsonb`), so records keep the table's column names and every type becomes the JSON that
PostgreSQL itself would write. Sessions are read-only and in UTC, so a `timestamp` column
without a time zone is read as UTC.

A partner table is untrusted (docs/limits.md): each row arrives as JSON text, counted against
the source's max_records and max_bytes and parsed here, so that a row nested too deeply to
read is counted as malformed rather than failing the whole fetch.

A table with a key column is read in key order, and a download resumes after a key (`position`,
given only where the key changes, so that a key held by several rows is never cut in two). The
server sorts the window before the first row arrives: the download stays alive through that wait
(`waiting`), and a key column with no index — a sort of the whole window, again for every
continued download — is reported in `warnings`. A table without a key column has no order to
resume in: its download starts again from the first row if it is cut off.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from shared.connectors.base import (
    InvalidConnection,
    InvalidCredentials,
    MalformedRows,
    Position,
    SourceUnreachable,
    Waiting,
    no_waiting,
)
from shared.connectors.endpoints import (
    HostRule,
    Resolver,
    parse_libpq_settings,
    pinned_address,
)
from shared.errors import PermanentError, SourceflowError
from shared.rules.flows import Window, WindowField
from shared.rules.limits import DEFAULT_RUN_LIMITS, ReadMeter, RunLimits, run_limits
from shared.rules.rotation import once_more_with_the_secret_read_again
from shared.runtime.redaction import untrusted_excerpt
from shared.runtime.secrets import Secrets

DEFAULT_SCHEMA = "public"
DEFAULT_FETCH_SIZE = 2000
# What a filter column may be: the window's bounds are compared with it as timestamptz.
DATE_TIME_TYPES = {1184: "timestamptz", 1114: "timestamp", 1082: "date"}
_CONNECT_TIMEOUT_SECONDS = 5
_CURSOR_NAME = "sourceflow_records"
# The only way sourceflow proves a password to a source: never in clear text, never as md5.
REQUIRED_AUTH = "scram-sha-256"
# The sslmodes that insist on TLS: with them, SCRAM is bound to the channel.
_TLS_REQUIRED = frozenset({"require", "verify-ca", "verify-full"})
# What libpq says when the server asks for a password some other way than SCRAM.
_AUTH_REFUSED_MARK = "authentication method requirement"
# libpq's own lines name the host, the port and the server's reason: longer than a vendor's.
_SERVER_TEXT_LIMIT = 300
# The kinds of relation an index can serve (pg_class.relkind): a table, a partitioned table, a
# materialized view. A view's plan is its tables'; sourceflow cannot tell from here.
_INDEXABLE = frozenset({"r", "p", "m"})


class SourceQueryFailed(PermanentError):
    error_name = "SourceQueryFailed"


class InsecureAuthentication(PermanentError):
    """The source's server asked for the password in a way that would give it away."""

    error_name = "InsecureAuthentication"


@dataclass
class PostgresConnector:
    source_id: str
    connect_args: Mapping[str, str]  # libpq settings, checked; never a password
    password_secret: str
    schema: str
    table: str
    last_modified_column: str
    sold_date_column: str
    key_column: str | None
    fetch_size: int
    secrets: Secrets = field(repr=False, compare=False)
    hosts: HostRule = field(repr=False, compare=False)
    limits: RunLimits = DEFAULT_RUN_LIMITS
    connect: Callable[..., Any] = field(default=psycopg2.connect, repr=False, compare=False)
    resolve: Resolver = field(default=socket.getaddrinfo, repr=False, compare=False)
    # The WHERE clause keeps only rows whose filter column holds a date in the window, and the
    # column's type guarantees that it is one: only a row too deep to read is dropped here.
    malformed: MalformedRows = field(default_factory=MalformedRows, init=False, compare=False)
    warnings: list[str] = field(default_factory=list, init=False, compare=False)
    _position: Position | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_connection(
        cls, source_id: str, connection: Mapping[str, Any], *, secrets: Secrets, hosts: HostRule
    ) -> PostgresConnector:
        """From a connection that passed its schema (`shared.connectors.parse_connection`);
        its libpq settings are parsed and checked here."""
        return cls(
            source_id,
            parse_libpq_settings(source_id, connection, hosts),
            connection["password_secret"],
            connection.get("schema", DEFAULT_SCHEMA),
            connection["table"],
            connection["last_modified_column"],
            connection["sold_date_column"],
            connection.get("key_column"),
            connection.get("fetch_size", DEFAULT_FETCH_SIZE),
            secrets,
            hosts,
            run_limits(connection),
        )

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.table}"

    def check(self) -> None:
        """Log in and run a query of no rows over the filter columns: the table or view exists,
        the role may read it, and the columns exist with date or time types."""
        filter_columns = {
            "last_modified_column": self.last_modified_column,
            "sold_date_column": self.sold_date_column,
        }
        with self._session() as conn, conn.cursor() as cur:
            cur.execute(self.probe_query())
            # The probe's first two columns are the filter columns (the key column may follow).
            described_columns = cur.description[: len(filter_columns)]
            for (setting, column), described in zip(
                filter_columns.items(), described_columns, strict=True
            ):
                if described.type_code not in DATE_TIME_TYPES:
                    cur.execute("SELECT %s::regtype::text", (described.type_code,))
                    raise InvalidConnection(
                        f"source {self.source_id!r}: column {column!r} of {self.relation} is "
                        f"{cur.fetchone()[0]}, not one of {sorted(DATE_TIME_TYPES.values())}; "
                        f"fix connection.{setting}"
                    )

    def records(
        self, window: Window, resume: Position | None = None, *, waiting: Waiting = no_waiting
    ) -> Iterator[dict[str, Any]]:
        self.malformed, self.warnings, self._position = MalformedRows(), [], None
        meter = ReadMeter(self.source_id, self.limits)
        if resume is not None:
            meter.resume(resume["read"])
        query, bounds = self.records_query(window, resume)
        with self._session() as conn:
            if self.key_column:
                with conn.cursor() as cur:
                    self.warnings.extend(self._unindexed_key(cur))
            with conn.cursor(name=_CURSOR_NAME) as cur:
                cur.itersize = self.fetch_size
                cur.execute(query, bounds)
                rows = iter(cur)
                # The first fetch runs the query: a sort of the window may come first.
                with waiting(conn.cancel):
                    ahead = next(rows, None)
                while ahead is not None:
                    (text, key), ahead = ahead, next(rows, None)
                    meter.record()
                    meter.read(len(text))  # characters: the bytes of all but non-ASCII text
                    try:
                        record = json.loads(text)
                    except RecursionError:  # nested past the parser's limit: nothing to load
                        where = f"{self.relation} row {meter.records:,}"
                        self.malformed.add(where, "is nested too deeply to read")
                        continue
                    if key is not None and (ahead is None or ahead[1] != key):
                        self._position = {"after_key": key, "read": meter.counts()}
                    yield record
                    self._position = None

    @property
    def position(self) -> Position | None:
        return self._position

    @property
    def resumable(self) -> bool:
        return self.key_column is not None

    def last_modified(self, record: Mapping[str, Any]) -> datetime | None:
        value = record.get(self.last_modified_column)
        if not isinstance(value, str):
            return None
        if value == "infinity":
            # PostgreSQL's, read past the window's end: stamped in the future for ever.
            return datetime.max.replace(tzinfo=UTC)
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    @property
    def key_field(self) -> str | None:
        return self.key_column

    def probe_query(self) -> sql.Composed:
        columns = [self.last_modified_column, self.sold_date_column]
        if self.key_column:
            columns.append(self.key_column)
        return sql.SQL("SELECT {columns} FROM {relation} LIMIT 0").format(
            columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
            relation=sql.Identifier(self.schema, self.table),
        )

    def records_query(
        self, window: Window, resume: Position | None = None
    ) -> tuple[sql.Composed, dict[str, Any]]:
        """The window's rows, as JSON objects, each with its key as text (NULL without a key
        column), in key order, after `resume`'s key; the bounds are bound parameters."""
        column = sql.Identifier(
            self.last_modified_column
            if window.field is WindowField.LAST_MODIFIED
            else self.sold_date_column
        )
        key = sql.Identifier(self.key_column) if self.key_column else None
        key_text = "t.{key}::text" if key is not None else "NULL"
        text = f"SELECT to_jsonb(t)::text, {key_text} FROM {{relation}} AS t"
        text += " WHERE t.{column} {after} %(start)s"
        if not window.reads_past_end:
            text += " AND t.{column} {before} %(end)s"
        if key is not None and resume is not None:
            # The rows without a key come last in key order: they are still to read. The key's
            # text is read back as the column's own type.
            text += " AND (t.{key} > %(after_key)s OR t.{key} IS NULL)"
        if key is not None:
            text += " ORDER BY t.{key}"
        query = sql.SQL(text).format(
            relation=sql.Identifier(self.schema, self.table),
            column=column,
            after=sql.SQL(">=" if window.start_inclusive else ">"),
            before=sql.SQL("<" if window.end_exclusive else "<="),
            key=key if key is not None else sql.SQL(""),
        )
        bounds: dict[str, Any] = {"start": window.start, "end": window.end}
        if resume is not None:
            bounds["after_key"] = resume["after_key"]
        return query, bounds

    def _unindexed_key(self, cur: Any) -> list[str]:
        """The warning for a key column that no index leads with, on a relation an index could
        serve: the key order the download reads in is then a sort of the whole window."""
        cur.execute(
            """
            SELECT c.relkind::text AS kind,
                   EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                             JOIN pg_catalog.pg_attribute a
                               ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                            WHERE i.indrelid = c.oid AND a.attname = %(column)s) AS indexed
              FROM pg_catalog.pg_class c
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = %(schema)s AND c.relname = %(table)s
            """,
            {"column": self.key_column, "schema": self.schema, "table": self.table},
        )
        found = cur.fetchone()
        if found is None or found[0] not in _INDEXABLE or found[1]:
            return []
        return [
            f"source {self.source_id!r}: connection.key_column {self.key_column!r} of "
            f"{self.relation} has no index, so every download (and every continuation of one) "
            "sorts the window's rows before the first arrives; have the partner "
            f"CREATE INDEX ON {self.relation} ({self.key_column})"
        ]

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """A read-only UTC session as the connection's user; driver errors become named ones.
        A refused login is tried once more with the password read again (a rotation)."""
        conn = once_more_with_the_secret_read_again(
            self._log_in,
            refused=lambda exc: isinstance(exc, InvalidCredentials),
            read_again=partial(self.secrets.forget, self.password_secret),
        )
        try:
            conn.set_session(readonly=True)
            with conn.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
            yield conn
        except psycopg2.Error as exc:
            raise self._query_error(exc) from exc
        finally:
            conn.close()

    def _log_in(self) -> Any:
        password = self.secrets.value(
            self.password_secret,
            key="password",
            source_id=self.source_id,
            setting="connection.password_secret",
        )
        try:
            return self.connect(
                **self.login_args(),
                password=password,
                connect_timeout=_CONNECT_TIMEOUT_SECONDS,
                application_name="sourceflow",
            )
        except psycopg2.OperationalError as exc:
            raise self._login_error(exc) from exc

    def login_args(self) -> dict[str, str]:
        """The libpq settings to log in with: the connection's, pinned to the checked address
        of its host, demanding SCRAM (bound to TLS when TLS is required)."""
        try:
            address = pinned_address(self.source_id, self.connect_args, self.hosts, self.resolve)
        except OSError as exc:
            raise SourceUnreachable(
                f"source {self.source_id!r}: cannot resolve the connection's host "
                f"{self.connect_args.get('host')!r} ({type(exc).__name__})"
            ) from exc
        pinned = {"hostaddr": address} if address else {}
        bound = (
            {"channel_binding": "require"}
            if self.connect_args.get("sslmode") in _TLS_REQUIRED
            else {}
        )
        return {**self.connect_args, **pinned, "require_auth": REQUIRED_AUTH, **bound}

    def _login_error(self, exc: psycopg2.OperationalError) -> SourceflowError:
        # libpq hands psycopg2 a failed login as text only (there is no SQLSTATE before a
        # session exists), so the server's FATAL line is what tells a refused login from a
        # server that did not answer. It names the user and the database, never the password;
        # the server's own words are quoted only as an excerpt (the server may be hostile).
        raw = " ".join(str(exc).split())
        reason = untrusted_excerpt(raw, limit=_SERVER_TEXT_LIMIT)
        if _AUTH_REFUSED_MARK in raw:
            return InsecureAuthentication(
                f"source {self.source_id!r}: the server did not offer SCRAM-SHA-256 ({reason}); "
                "sourceflow sends a password only that way, so nothing was sent: have the "
                "server's pg_hba.conf use scram-sha-256 for the connection's user"
            )
        if "authentication failed" in raw or "no pg_hba.conf entry" in raw:
            return InvalidCredentials(
                f"source {self.source_id!r}: PostgreSQL refused the login ({reason}); fix the "
                f"password in the secret {self.password_secret!r} or the connection's user"
            )
        if "does not exist" in raw:
            return InvalidConnection(
                f"source {self.source_id!r}: {reason}; fix the connection's dbname or user"
            )
        return SourceUnreachable(
            f"source {self.source_id!r}: cannot connect to PostgreSQL: {reason}"
        )

    def _query_error(self, exc: psycopg2.Error) -> SourceflowError:
        # The primary message alone: the full text repeats the query under it.
        reason = untrusted_excerpt(exc.diag.message_primary or str(exc), limit=_SERVER_TEXT_LIMIT)
        if isinstance(exc, psycopg2.errors.UndefinedTable | psycopg2.errors.InvalidSchemaName):
            return InvalidConnection(
                f"source {self.source_id!r}: there is no table or view {self.relation} "
                f"({reason}); fix connection.schema or connection.table"
            )
        if isinstance(exc, psycopg2.errors.UndefinedColumn):
            return InvalidConnection(
                f"source {self.source_id!r}: {reason} in {self.relation}; fix the connection's "
                "*_column settings"
            )
        if isinstance(exc, psycopg2.errors.InsufficientPrivilege):
            return InvalidCredentials(
                f"source {self.source_id!r}: {reason}; GRANT SELECT ON {self.relation} to the "
                "connection's user"
            )
        if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
            return SourceUnreachable(f"source {self.source_id!r}: PostgreSQL failed: {reason}")
        return SourceQueryFailed(f"source {self.source_id!r}: reading {self.relation}: {reason}")
