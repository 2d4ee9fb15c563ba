"""infra.migrate_stage against a real PostgreSQL, as a deploy runs it: the migrations, every
role's grants and the services' logins; a second run changes nothing, an edited applied
migration and a failing one are refused by name, and a failing one leaves nothing behind."""

from __future__ import annotations

import json
import secrets
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2.extensions import make_dsn

from infra.grants import MANAGED_ROLES
from infra.migrate import MigrationError, discover
from infra.migrate_stage import StageMigrationError, migrate_stage, service_passwords
from infra.resources import SERVICES
from shared.store.privileges import RESPECS_ROLE, service_role

ALL_VERSIONS = [migration.version for migration in discover()]
# The Re-specs role's tables must exist where the grants are applied: none in an empty database.
NO_TABLES: frozenset[str] = frozenset()
NOTHING_BUT_MIGRATIONS: dict[str, Any] = {"respecs_tables": NO_TABLES, "service_passwords": {}}


def snapshot(url: str) -> dict[str, Any]:
    """What a run of the migration step decides: the migrations recorded, the managed roles'
    login and password verifier, and every privilege they hold on the schema's tables, columns
    and functions."""
    with closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT version, checksum FROM public.schema_migration ORDER BY version")
        migrations = cur.fetchall()
        cur.execute(
            "SELECT rolname, rolcanlogin, rolpassword FROM pg_authid"
            " WHERE rolname = ANY(%s) ORDER BY rolname",
            (list(MANAGED_ROLES),),
        )
        roles = cur.fetchall()
        cur.execute(
            """
            SELECT grantee, table_name, column_name, privilege_type
              FROM information_schema.column_privileges
             WHERE table_schema = 'public' AND grantee = ANY(%(roles)s)
            UNION ALL
            SELECT grantee, routine_name, '', privilege_type
              FROM information_schema.routine_privileges
             WHERE routine_schema = 'public' AND grantee = ANY(%(roles)s)
             ORDER BY 1, 2, 3, 4
            """,
            {"roles": list(MANAGED_ROLES)},
        )
        privileges = cur.fetchall()
    return {"migrations": migrations, "roles": roles, "privileges": privileges}


def connects_as(url: str, role: str, password: str) -> str:
    login = make_dsn(url, user=role, password=password)
    with closing(psycopg2.connect(login)) as conn, conn.cursor() as cur:
        cur.execute("SELECT session_user")
        row = cur.fetchone()
        assert row is not None
        return str(row[0])


def test_a_second_run_changes_nothing_and_each_service_logs_in_with_its_secret(
    empty_database_url: str,
) -> None:
    # Given an empty database and own secrets for two services (the others use the core's)
    passwords = {"download": secrets.token_urlsafe(18), "validation": secrets.token_urlsafe(18)}

    # When the deploy's migration step runs twice
    first = migrate_stage(empty_database_url, respecs_tables=NO_TABLES, service_passwords=passwords)
    after_first = snapshot(empty_database_url)
    second = migrate_stage(
        empty_database_url, respecs_tables=NO_TABLES, service_passwords=passwords
    )

    # Then the first applied every migration and set both logins; the second changed nothing
    assert first.applied == ALL_VERSIONS
    assert sorted(first.logins_set) == [service_role("download"), service_role("validation")]
    assert second.applied == [] and second.logins_set == []
    assert snapshot(empty_database_url) == after_first
    # And each service with a secret of its own logs in as its own role, with its password
    for service, password in passwords.items():
        assert connects_as(empty_database_url, service_role(service), password) == service_role(
            service
        )
    # And the others are said to connect as the core secret's login (roles are the server's,
    # so whether another test gave them a login is not this stage's to say)
    assert second.without_login == [
        service_role(service) for service in SERVICES if service not in passwords
    ]
    # And every managed role holds privileges (the grants of shared/store/privileges.py)
    assert {grantee for grantee, *_ in after_first["privileges"]} >= {
        service_role(service) for service in SERVICES
    }


def test_a_rotated_secret_s_password_is_set_on_the_next_run(empty_database_url: str) -> None:
    # Given a stage migrated with download's secret
    old = {"download": secrets.token_urlsafe(18)}
    migrate_stage(empty_database_url, respecs_tables=NO_TABLES, service_passwords=old)

    # When the secret holds a new password and the step runs again
    new = {"download": secrets.token_urlsafe(18)}
    again = migrate_stage(empty_database_url, respecs_tables=NO_TABLES, service_passwords=new)

    # Then the login takes the new password, and the old one is refused
    assert again.logins_set == [service_role("download")]
    assert connects_as(empty_database_url, service_role("download"), new["download"])
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        connects_as(empty_database_url, service_role("download"), old["download"])


def test_an_edited_applied_migration_is_refused_by_name_and_nothing_else_runs(
    empty_database_url: str, migrations_copy: Path
) -> None:
    # Given a stage migrated from a directory
    migrate_stage(empty_database_url, **NOTHING_BUT_MIGRATIONS, migrations=migrations_copy)
    first = discover(migrations_copy)[0].path

    # When an applied file is edited and the step runs again
    first.write_text(first.read_text() + "\n-- edited after it was applied\n")
    password = secrets.token_urlsafe(18)
    with pytest.raises(MigrationError, match=f"{first.name} was changed after it was applied"):
        migrate_stage(
            empty_database_url,
            respecs_tables=NO_TABLES,
            service_passwords={"download": password},
            migrations=migrations_copy,
        )

    # Then no service's login was set either
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        connects_as(empty_database_url, service_role("download"), password)


def test_a_failing_migration_leaves_nothing_of_itself_and_is_named(
    empty_database_url: str, migrations_copy: Path
) -> None:
    # Given a new migration whose second statement fails
    (migrations_copy / "0999_it_half.sql").write_text(
        "CREATE TABLE public.it_half (id integer);\nSELECT 1 / 0;\n"
    )

    # When the step runs
    with pytest.raises(MigrationError, match=r"0999_it_half\.sql failed and was not applied"):
        migrate_stage(empty_database_url, **NOTHING_BUT_MIGRATIONS, migrations=migrations_copy)

    # Then the migrations before it are applied, and nothing of the failing one
    with closing(psycopg2.connect(empty_database_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.it_half')")
        assert cur.fetchone() == (None,)
        cur.execute("SELECT max(version) FROM public.schema_migration")
        assert cur.fetchone() == (ALL_VERSIONS[-1],)
    # And once fixed, it applies
    (migrations_copy / "0999_it_half.sql").write_text("CREATE TABLE public.it_half (id integer);")
    done = migrate_stage(empty_database_url, **NOTHING_BUT_MIGRATIONS, migrations=migrations_copy)
    assert done.applied == ["0999_it_half"]


def test_a_service_secret_must_name_the_service_s_role() -> None:
    secrets_by_name = {
        "sourceflow/dev/database/download": json.dumps(
            {"host": "db", "username": "admin", "password": "a-long-password"}
        )
    }

    with pytest.raises(StageMigrationError, match="set its username to 'sourceflow_download'"):
        service_passwords("dev", secrets_by_name.get)


def test_only_the_services_with_a_secret_of_their_own_get_a_password() -> None:
    secrets_by_name = {
        "sourceflow/dev/database/unlocking": json.dumps(
            {"host": "db", "username": "sourceflow_unlocking", "password": "a-long-password"}
        )
    }

    assert service_passwords("dev", secrets_by_name.get) == {"unlocking": "a-long-password"}


def test_a_run_that_names_no_respecs_tables_keeps_those_the_role_may_update(
    empty_database_url: str,
) -> None:
    # Given a stage whose Re-specs role may update one table
    migrate_stage(empty_database_url, **NOTHING_BUT_MIGRATIONS)
    with closing(psycopg2.connect(empty_database_url)) as conn, conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE public.it_attributes (id integer PRIMARY KEY, value text)")
    allowed = frozenset({"public.it_attributes"})
    migrate_stage(empty_database_url, respecs_tables=allowed, service_passwords={})
    granted = snapshot(empty_database_url)

    # When the step runs again without naming the tables (a deploy that does not give them)
    migrate_stage(empty_database_url, respecs_tables=None, service_passwords={})

    # Then the role may still update that table, and nothing else changed
    assert snapshot(empty_database_url) == granted
    assert (RESPECS_ROLE, "it_attributes", "value", "UPDATE") in granted["privileges"]
