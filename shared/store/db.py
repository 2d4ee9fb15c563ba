"""PostgreSQL connection and transactions, shared by every service.

Driver errors that retrying can cure (lost connection, server shutting down, serialization
failure, lock timeout) become `TransientError` here, so services never inspect psycopg2; a row
the table's CHECK constraints refuse becomes `RowRejected`, which retrying cannot cure.
JSON columns are read by `shared.rules.limits.stored_json`: a value nested too deeply to read
(a source row written by hand before migration 0012) comes back as `UnreadableJson`, so that
one row fails the rules that read it by name instead of failing every query that lists it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras
from psycopg2.extensions import connection as PgConnection
from psycopg2.extensions import make_dsn

from shared.errors import PermanentError, TransientError
from shared.rules.limits import stored_json
from shared.rules.rotation import once_more_with_the_secret_read_again

Cursor = psycopg2.extras.RealDictCursor

_RETRYABLE = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    psycopg2.errors.SerializationFailure,
    psycopg2.errors.DeadlockDetected,
    psycopg2.errors.LockNotAvailable,
)


class RowRejected(PermanentError):
    """A write the table's CHECK constraints refuse (for a source row: migration 0012's bounds
    on its JSON, which a row written before them may break)."""

    error_name = "RowRejected"


class Database:
    """One lazily (re)opened connection; a warm Lambda container keeps it between events.

    `read_dsn_again`, when the DSN came from a secret, reads it again: a login PostgreSQL
    refuses (the secret was rotated since it was read) is tried once more with what it returns
    (shared/rules/rotation.py); a second refusal is reported as any failure to connect is.
    """

    def __init__(
        self,
        dsn: str,
        *,
        application_name: str = "sourceflow",
        read_dsn_again: Callable[[], str] | None = None,
    ) -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._read_dsn_again = read_dsn_again
        self._conn: PgConnection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> PgConnection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = once_more_with_the_secret_read_again(
                    self._connect, refused=self._login_refused, read_again=self._read_again
                )
            except psycopg2.OperationalError as exc:
                raise TransientError(f"cannot connect to PostgreSQL: {exc}".strip()) from exc
            psycopg2.extras.register_default_json(self._conn, loads=stored_json)
            psycopg2.extras.register_default_jsonb(self._conn, loads=stored_json)
        return self._conn

    def _connect(self) -> PgConnection:
        return psycopg2.connect(
            self._dsn, application_name=self._application_name, connect_timeout=5
        )

    def _login_refused(self, exc: Exception) -> bool:
        # libpq reports a refused login as text only (no SQLSTATE before a session exists).
        return (
            self._read_dsn_again is not None
            and isinstance(exc, psycopg2.OperationalError)
            and "authentication failed" in str(exc)
        )

    def _read_again(self) -> None:
        assert self._read_dsn_again is not None
        self._dsn = self._read_dsn_again()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One decision: everything inside commits together or not at all."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.cursor(cursor_factory=Cursor) as cur:
                    yield cur
                conn.commit()
            except _RETRYABLE as exc:
                self._discard(conn)
                raise TransientError(f"database unavailable: {exc}".strip()) from exc
            except psycopg2.errors.CheckViolation as exc:
                conn.rollback()
                raise RowRejected(
                    f"PostgreSQL refused the write: {exc.diag.message_primary}; see "
                    "docs/limits.md for the bounds of a source row"
                ) from exc
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise

    def _discard(self, conn: PgConnection) -> None:
        try:
            conn.close()
        finally:
            self._conn = None

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None


def fetch_one(cur: Any, query: Any, params: Any = None) -> dict[str, Any] | None:
    """Run `query` and return its first row as a dict, or None when it has none."""
    cur.execute(query, params)
    row = cur.fetchone()
    return dict(row) if row else None


def dsn_from_secret(secret: str, *, reference: str) -> str:
    """A libpq connection string from a Secrets Manager database secret.

    The secret is the JSON object RDS and Secrets Manager's rotation functions keep:
    `{"host", "port", "dbname", "username", "password"}`, where port (5432) and dbname
    (postgres) may be left out. Errors name the secret and the keys, never a value.
    """
    try:
        document = json.loads(secret)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ValueError(
            f"database secret {reference} is not a JSON object; store "
            '{"host", "port", "dbname", "username", "password"} as RDS does'
        )
    missing = [
        key
        for key in ("host", "username", "password")
        if not isinstance(document.get(key), str) or not document[key]
    ]
    if missing:
        raise ValueError(f"database secret {reference} has no text {', '.join(missing)}")
    port = document.get("port", 5432)
    if isinstance(port, bool) or not str(port).isdigit():
        raise ValueError(f"database secret {reference}: port is not a whole number")
    return str(
        make_dsn(
            host=document["host"],
            port=str(port),
            dbname=str(document.get("dbname") or "postgres"),
            user=document["username"],
            password=document["password"],
        )
    )


def session_login(cur: Any) -> str:
    """Who this connection is: the login the database authenticated (a person's own login, or
    a service's role). What a person does is recorded as this, never as a name they type."""
    cur.execute("SELECT session_user AS login")
    row = cur.fetchone()
    return str(row["login"])


# SQLSTATE classes of failures a statement meets through no fault of its own: the connection
# (08), a concurrent transaction (40: serialization failure, deadlock), the server's resources
# (53), an operator (57) or the system (58), and a lock not granted in time (55P03).
_NOT_THE_QUERYS_FAULT = ("08", "40", "53", "57", "58", "55P03")
SERVER_MESSAGE_CHARS = 300
"""How much of PostgreSQL's message the error of a failed query (a Re-specs query, a workflow's
sql task) carries."""


def query_at_fault(pgcode: str | None) -> bool:
    """Whether a query people wrote (Re-specs, a workflow's sql task) failed because of what it
    says (a value, a type, a constraint, a limit, something unsupported): retrying the same
    query cannot help."""
    return pgcode is not None and not pgcode.startswith(_NOT_THE_QUERYS_FAULT)
