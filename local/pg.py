"""The embedded stack's own work on PostgreSQL: password authentication for the embedded
server, and a transaction on a connection of its own."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn
from psycopg2.extras import RealDictCursor

# Every connection, on the socket and on TCP, proves its password with SCRAM: pgserver's
# initdb trusts everyone, which would let any local process be any role (a person included).
SCRAM_ONLY_HBA = (
    "# Written by sourceflow (local/pg.py): every role proves its password with SCRAM.\n"
    "local all all scram-sha-256\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
    "host all all ::1/128 scram-sha-256\n"
)
ADMIN_PASSWORD_FILE = "admin.password"
# The demo warehouse's tables: what a Re-specs query may update on the embedded stack.
WAREHOUSE_SQL = Path(__file__).resolve().parent / "warehouse.sql"


class EmbeddedDatabaseError(RuntimeError):
    """The embedded database's files disagree with each other; the message says how to fix."""


def require_passwords(server: Any, state_dir: Path) -> str:
    """Switch the embedded server to SCRAM for every role; returns the superuser's URL.

    The superuser's password is made once, kept in `<state_dir>/admin.password` (mode 0600),
    and read again when the same data directory is started later.
    """
    pgdata = Path(server.pgdata)
    hba = pgdata / "pg_hba.conf"
    password_file = state_dir / ADMIN_PASSWORD_FILE
    trusting = hba.read_text() != SCRAM_ONLY_HBA
    if not trusting:
        if not password_file.exists():
            raise EmbeddedDatabaseError(
                f"the embedded database in {pgdata} asks for the superuser's password, which was "
                f"kept in {password_file}, and that file is gone; delete {pgdata} to start afresh"
            )
        return str(make_dsn(server.get_uri(), password=password_file.read_text().strip()))
    password = secrets.token_urlsafe(24)
    password_file.touch(mode=0o600)
    password_file.write_text(password + "\n")
    admin_url = str(make_dsn(server.get_uri(), password=password))
    with transaction(server.get_uri()) as cur:
        cur.execute("SET password_encryption = 'scram-sha-256'")
        cur.execute(sql.SQL("ALTER ROLE CURRENT_USER PASSWORD {}").format(sql.Literal(password)))
        hba.write_text(SCRAM_ONLY_HBA)
        cur.execute("SELECT pg_reload_conf()")
    return admin_url


def create_warehouse_tables(url: str) -> None:
    with transaction(url) as cur:
        cur.execute(WAREHOUSE_SQL.read_text())


@contextmanager
def transaction(url: str, *, rows_as_dicts: bool = False) -> Iterator[Any]:
    """One committed transaction on a connection of its own; its rows are tuples, or dicts as
    the store's functions (shared.store) expect them."""
    factory = RealDictCursor if rows_as_dicts else None
    with closing(psycopg2.connect(url)) as conn, conn, conn.cursor(cursor_factory=factory) as cur:
        yield cur
