"""The embedded stack's own work on PostgreSQL: a transaction on a connection of its own, and
login roles created or updated in place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import psycopg2
from psycopg2 import sql


@contextmanager
def transaction(url: str) -> Iterator[Any]:
    """One committed transaction on a connection of its own."""
    with closing(psycopg2.connect(url)) as conn, conn, conn.cursor() as cur:
        yield cur


def upsert_login_role(cur: Any, role: str, password: str) -> None:
    """Create `role` with LOGIN and this password, or give an existing one both."""
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    cur.execute(
        sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )
