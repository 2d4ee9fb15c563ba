"""Database roles and their privileges, applied from the one list in
`shared/store/privileges.py`: each service's role, the people's group, and the role a Re-specs
query runs as. Run after the migrations, by the embedded stack and by a deploy
(`python -m infra.grants --respecs-tables public.listing_attributes`, DATABASE_URL an
administrator's); applying again converges (everything is revoked first, then granted).

People are added with `python -m infra.grants --person NAME` (in the cloud the login is
authenticated by IAM: RDS's `rds_iam` role; on the embedded stack by a SCRAM password).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping
from typing import Any

from psycopg2 import sql

from infra.resources import SERVICES
from shared.store.privileges import (
    FUNCTIONS,
    OPERATORS_ROLE,
    RESPECS_ROLE,
    WRITES,
    AllColumnsBut,
    Columns,
    TableWrites,
    respecs_writes,
    service_role,
)

SERVICE_ROLES = tuple(service_role(service) for service in SERVICES)
# The roles this module owns the privileges of (people inherit theirs from OPERATORS_ROLE).
MANAGED_ROLES = (*SERVICE_ROLES, OPERATORS_ROLE, RESPECS_ROLE)


class GrantsError(RuntimeError):
    pass


def apply_grants(cur: Any, respecs_tables: frozenset[str]) -> None:
    """Create the managed roles that are missing (without login: an administrator gives each
    service's role its login), and set every one's privileges to exactly the list's."""
    missing = set(SERVICE_ROLES) - set(WRITES)
    if missing:
        raise GrantsError(f"shared/store/privileges.py lists no writes for {sorted(missing)}")
    for role in MANAGED_ROLES:
        _ensure_role(cur, role)
        _revoke_everything(cur, role)
        cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
        cur.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(role)
            )
        )
        # bigserial keys (the history, revocations) are filled by the definer's triggers; the
        # sequences a writer needs are those of the tables it inserts into.
        cur.execute(
            sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(
                sql.Identifier(role)
            )
        )
    for role, tables in WRITES.items():
        _grant_writes(cur, role, tables)
    _grant_writes(cur, RESPECS_ROLE, respecs_writes(respecs_tables))
    # Unlocking runs the approved query as the Re-specs role (SET LOCAL ROLE), without holding
    # the role's rights itself.
    cur.execute(
        sql.SQL("GRANT {} TO {} WITH INHERIT FALSE, SET TRUE").format(
            sql.Identifier(RESPECS_ROLE), sql.Identifier(service_role("unlocking"))
        )
    )
    for role, functions in FUNCTIONS.items():
        for function in functions:
            cur.execute(
                sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                    sql.SQL(function), sql.Identifier(role)
                )
            )


def add_person(cur: Any, name: str, *, password: str | None) -> None:
    """A person's own login, a member of the operators' group. With a password (the embedded
    stack) it is checked by SCRAM; without one, by IAM (RDS's `rds_iam` role)."""
    if name in MANAGED_ROLES:
        raise GrantsError(f"{name!r} is a service's role, not a person's name")
    _ensure_role(cur, name, login=True)
    if password is not None:
        cur.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(password))
        )
    else:
        cur.execute(sql.SQL("GRANT rds_iam TO {}").format(sql.Identifier(name)))
    cur.execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(OPERATORS_ROLE), sql.Identifier(name))
    )


def set_login(cur: Any, role: str, password: str) -> None:
    """Create `role` with LOGIN and this password, or give an existing one both."""
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    cur.execute(
        sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )


def _ensure_role(cur: Any, role: str, *, login: bool = False) -> None:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    if cur.fetchone() is None:
        cur.execute(
            sql.SQL("CREATE ROLE {} " + ("LOGIN" if login else "NOLOGIN")).format(
                sql.Identifier(role)
            )
        )


def _revoke_everything(cur: Any, role: str) -> None:
    for statement in (
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}",
        "REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}",
        "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM {}",
    ):
        cur.execute(sql.SQL(statement).format(sql.Identifier(role)))
    # Column grants survive a table-level REVOKE ALL only if granted per column; drop those too.
    cur.execute(
        """
        SELECT table_schema, table_name, column_name, privilege_type
          FROM information_schema.column_privileges
         WHERE grantee = %s AND table_schema = 'public'
        """,
        (role,),
    )
    for schema, table, column, privilege in cur.fetchall():
        cur.execute(
            sql.SQL("REVOKE {} ({}) ON {}.{} FROM {}").format(
                sql.SQL(privilege),
                sql.Identifier(column),
                sql.Identifier(schema),
                sql.Identifier(table),
                sql.Identifier(role),
            )
        )


def _grant_writes(cur: Any, role: str, tables: Mapping[str, TableWrites]) -> None:
    for table, writes in tables.items():
        schema, name = table.split(".", 1)
        target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        for privilege, columns in (("INSERT", writes.insert), ("UPDATE", writes.update)):
            resolved = _columns(cur, schema, name, columns)
            if resolved:
                cur.execute(
                    sql.SQL("GRANT {} ({}) ON {} TO {}").format(
                        sql.SQL(privilege),
                        sql.SQL(", ").join(map(sql.Identifier, resolved)),
                        target,
                        sql.Identifier(role),
                    )
                )
        if writes.delete:
            cur.execute(sql.SQL("GRANT DELETE ON {} TO {}").format(target, sql.Identifier(role)))


def _columns(cur: Any, schema: str, table: str, columns: Columns) -> list[str]:
    cur.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    )
    existing = [row[0] for row in cur.fetchall()]
    if not existing:
        raise GrantsError(f"table {schema}.{table} does not exist; apply the migrations first")
    if isinstance(columns, AllColumnsBut):
        return [column for column in existing if column not in columns.columns]
    unknown = sorted(set(columns) - set(existing))
    if unknown:
        raise GrantsError(f"{schema}.{table} has no column(s) {unknown}")
    return list(columns)


def parse_tables(text: str) -> frozenset[str]:
    return frozenset(t.strip() for t in text.split(",") if t.strip())


def main(argv: Iterable[str] | None = None) -> None:
    import psycopg2

    parser = argparse.ArgumentParser(prog="python -m infra.grants", description=__doc__)
    parser.add_argument("--respecs-tables", default=os.environ.get("RESPECS_ALLOWED_TABLES", ""))
    parser.add_argument("--person", action="append", default=[], help="add a person's login")
    args = parser.parse_args(list(argv) if argv is not None else None)
    with psycopg2.connect(os.environ["DATABASE_URL"]) as conn, conn.cursor() as cur:
        apply_grants(cur, parse_tables(args.respecs_tables))
        for person in args.person:
            add_person(cur, person, password=None)


if __name__ == "__main__":
    main()
