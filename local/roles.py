"""The embedded stack's database logins: one per service, as on AWS, and one per person.

Each service connects as itself (`sourceflow_<service>`) with the privileges
`shared/store/privileges.py` lists (applied by `infra/grants.py`), so an operator — or a fault
test — can cut one service off the database without touching the others. Each person gets a
login of their own and a credentials file, `<state dir>/people/<name>.env` (mode 0600), that
`sourceflow` reads when SOURCEFLOW_CREDENTIALS names it: what a person does is recorded as
that login, and the second-person rule compares logins.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from psycopg2 import sql
from psycopg2.extensions import make_dsn

from infra.grants import add_person, apply_grants, set_login
from infra.resources import SERVICES
from local.pg import transaction
from ops.config import write_env_file
from shared.store.privileges import service_role

# Two, so that the demo's Re-specs run can be asked for by one and approved by the other.
DEMO_PEOPLE = ("alice", "bob")
# The demo warehouse's login for a workflow's sql tasks (the `warehouse` target): it may read
# and write the campaign tables (local/warehouse.sql) and nothing else, not even read the
# ledger, which every sourceflow role may.
WAREHOUSE_TARGET = "warehouse"
WAREHOUSE_ROLE = "sourceflow_warehouse"
WAREHOUSE_TABLES = ("public.campaign", "public.campaign_cache", "public.campaign_metrics")


def create_roles(admin_url: str, respecs_tables: frozenset[str]) -> dict[str, str]:
    """Create (or re-enable) each service's login, with a new password, and apply every role's
    privileges; returns each service's DATABASE_URL."""
    urls = {}
    with transaction(admin_url) as cur:
        for service in SERVICES:
            password = secrets.token_urlsafe(18)
            set_login(cur, service_role(service), password)
            urls[service] = make_dsn(admin_url, user=service_role(service), password=password)
        apply_grants(cur, respecs_tables)
    return urls


def create_people(admin_url: str, people: tuple[str, ...], directory: Path) -> dict[str, Path]:
    """A login and a credentials file for each person; returns each one's file."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    with transaction(admin_url) as cur:
        for person in people:
            password = secrets.token_urlsafe(18)
            add_person(cur, person, password=password)
            path = directory / f"{person}.env"
            login = make_dsn(admin_url, user=person, password=password)
            write_env_file(path, {"DATABASE_URL": login})
            files[person] = path
    return files


def cut_off(admin_url: str, service: str) -> None:
    """The database becomes unavailable to one service: no new logins, sessions ended."""
    role = service_role(service)
    with transaction(admin_url) as cur:
        cur.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )


def restore(admin_url: str, service: str) -> None:
    with transaction(admin_url) as cur:
        cur.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(service_role(service))))


def create_warehouse_login(admin_url: str) -> str:
    """The warehouse login (created, or given a new password), with only its tables' rights;
    returns its DSN."""
    password = secrets.token_urlsafe(18)
    with transaction(admin_url) as cur:
        set_login(cur, WAREHOUSE_ROLE, password)
        role = sql.Identifier(WAREHOUSE_ROLE)
        cur.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
        for table in WAREHOUSE_TABLES:
            schema, name = table.split(".")
            cur.execute(
                sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(
                    sql.Identifier(schema, name), role
                )
            )
    return str(make_dsn(admin_url, user=WAREHOUSE_ROLE, password=password))


def rotate_password(admin_url: str, role: str) -> str:
    """A new password for the login `role` (what a rotation does); returns it. The sessions it
    has stay open, as PostgreSQL keeps them."""
    password = secrets.token_urlsafe(18)
    with transaction(admin_url) as cur:
        set_login(cur, role, password)
    return password
