"""Least privilege, proven by connecting: each service's role, a person and the Re-specs role may
write exactly what shared/store/privileges.py lists, and every other write is refused by
PostgreSQL; a person's decisions go only through the database's decision functions, which
take the person from the login; a wrong password is refused."""

from __future__ import annotations

import warnings
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn

from local.pg import require_passwords
from local.roles import create_roles
from shared.store import approvals
from shared.store.db import Database
from shared.store.privileges import (
    OPERATORS_ROLE,
    RESPECS_ROLE,
    WRITES,
    AllColumnsBut,
    respecs_writes,
    service_role,
)
from tests.integration.conftest import RESPECS_TABLES, MakeSource, NewExecution, validate

People = dict[str, Database]
ALICE, BOB = "it_alice", "it_bob"
# The tables whose writes the list governs (every table a role may read).
TABLES = (
    "public.source",
    "public.source_run",
    "public.source_flow_history",
    "public.source_change",
    "public.run_approval",
    "public.respecs_approval",
    "public.respecs_approval_revocation",
    "public.landed_version",
    "public.scheduler_tick",
    "public.source_overdue",
    "public.run_admission",
    "public.delivery_failure",
    "public.parked_message",
    "public.listing_attributes",
    "public.backfill",
    "public.backfill_slice_run",
    "public.download_checkpoint",
    "public.run_request",
    "public.run_redrive",
    "public.vendor_limit",
    "public.vendor_slot",
    "public.workflow_version",
    "public.workflow",
    "public.workflow_run",
    "public.workflow_task_run",
)


@pytest.fixture(scope="module")
def logins(migrated_url: str, person_urls: dict[str, str]) -> dict[str, str]:
    """A URL per role: the four services (given a login, as the embedded stack does) and a
    person (alice) for the operators' group; the Re-specs role is used by unlocking."""
    services = create_roles(migrated_url, RESPECS_TABLES)
    return {
        **{service_role(service): url for service, url in services.items()},
        OPERATORS_ROLE: person_urls[ALICE],
    }


def columns_of(cur: Any, table: str) -> list[str]:
    schema, name = table.split(".")
    cur.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s",
        (schema, name),
    )
    return [row[0] for row in cur.fetchall()]


def allowed(columns: Any, all_columns: list[str]) -> set[str]:
    if isinstance(columns, AllColumnsBut):
        return set(all_columns) - set(columns.columns)
    return set(columns)


def try_update(url: str, table: str, column: str, *, as_role: str | None = None) -> bool:
    """Whether the login may UPDATE `column` of `table` (WHERE false: no row changes, but the
    privilege is checked all the same)."""
    with closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        if as_role:
            cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(as_role)))
        schema, name = table.split(".")
        try:
            cur.execute(
                sql.SQL("UPDATE {}.{} SET {} = {} WHERE false").format(
                    sql.Identifier(schema),
                    sql.Identifier(name),
                    sql.Identifier(column),
                    sql.Identifier(column),
                )
            )
        except psycopg2.errors.InsufficientPrivilege:
            return False
        finally:
            conn.rollback()
    return True


def refused(url: str, statement: str, *, as_role: str | None = None) -> bool:
    with closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        if as_role:
            cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(as_role)))
        try:
            cur.execute(statement)
        except psycopg2.errors.InsufficientPrivilege:
            return True
        finally:
            conn.rollback()
    return False


# -- every column of every table: updatable exactly when the list says so -------------------


@pytest.mark.parametrize("role", sorted([*WRITES, RESPECS_ROLE]))
def test_each_role_may_update_exactly_the_columns_the_list_gives_it(
    role: str, logins: dict[str, str], migrated_url: str
) -> None:
    # The Re-specs role is used by unlocking, with SET ROLE
    url, as_role = (
        (logins[service_role("unlocking")], RESPECS_ROLE)
        if role == RESPECS_ROLE
        else (logins[role], None)
    )
    writes = respecs_writes(RESPECS_TABLES) if role == RESPECS_ROLE else WRITES[role]
    with closing(psycopg2.connect(migrated_url)) as conn, conn.cursor() as cur:
        columns = {table: columns_of(cur, table) for table in TABLES}
    wrong = []
    for table, all_columns in columns.items():
        granted = allowed(writes[table].update, all_columns) if table in writes else set()
        for column in all_columns:
            if try_update(url, table, column, as_role=as_role) != (column in granted):
                wrong.append(f"{table}.{column}: {'refused' if column in granted else 'allowed'}")
    assert wrong == [], f"{role} may not update what the list says: {wrong}"


# -- the writes an attacker would want, refused by name ---------------------------------------

FORBIDDEN = [
    # Any service rewriting a connection (and so where a secret goes)
    ("validation", "UPDATE public.source SET connection = '{}' WHERE false"),
    ("download", "UPDATE public.source SET connection = '{}' WHERE false"),
    # Moving a cursor that is unlocking's to move
    ("download", "UPDATE public.source SET last_modified_date = now() WHERE false"),
    ("validation", "UPDATE public.source SET last_modified_date = now() WHERE false"),
    # Forging an approval or its decision
    ("validation", "INSERT INTO public.respecs_approval SELECT * FROM public.respecs_approval"),
    ("validation", "UPDATE public.run_approval SET status = 'approved' WHERE false"),
    ("validation", "UPDATE public.run_approval SET requested_by = 'x' WHERE false"),
    ("unlocking", "DELETE FROM public.respecs_approval WHERE false"),
    # Rewriting flow history
    (
        "scheduler",
        "INSERT INTO public.source_flow_history (source_id, changed_by, reason)"
        " SELECT source_id, 'x', 'y' FROM public.source WHERE false",
    ),
    ("validation", "DELETE FROM public.source_flow_history WHERE false"),
    # Rewriting a source's settings, or their history, or enabling a source at will
    ("scheduler", "UPDATE public.source SET is_active = true WHERE false"),
    ("scheduler", "UPDATE public.source SET connection = '{}' WHERE false"),
    ("validation", "DELETE FROM public.source_change WHERE false"),
    ("validation", "SELECT public.source_enable_due()"),
    # Forging a cancel
    ("download", "UPDATE public.source_run SET cancel_requested_by = 'x' WHERE false"),
    # Unlocking updating warehouse tables itself (only the Re-specs role may)
    ("unlocking", "UPDATE public.listing_attributes SET value = 'x' WHERE false"),
    # A decision outside the decision functions
    ("validation", "SELECT public.respecs_decide('x', 'approved', NULL)"),
    ("unlocking", "SELECT public.respecs_revoke('x', 'y', 'z')"),
    # Approving a backfill, or asking for one, as a service
    ("scheduler", "UPDATE public.backfill SET status = 'active' WHERE false"),
    ("scheduler", "SELECT public.backfill_decide(1, 'approved', NULL)"),
    (
        "scheduler",
        "SELECT public.backfill_request('x', 'last_modified', now(), now(), '1 day', 'y')",
    ),
    # Starting a backfill's slice is the scheduler's alone
    (
        "validation",
        "INSERT INTO public.backfill_slice_run SELECT * FROM public.backfill_slice_run",
    ),
    # A vendor's limit is a person's to set; its slots are download's to take
    ("download", "UPDATE public.vendor_limit SET max_concurrent = 1000 WHERE false"),
    ("download", "DELETE FROM public.vendor_limit WHERE false"),
    ("download", "DELETE FROM public.vendor_slot WHERE false"),
    ("scheduler", "UPDATE public.vendor_slot SET expires_at = NULL WHERE false"),
    # An overdue episode is the scheduler's to announce and clear: nobody else hides one
    ("unlocking", "DELETE FROM public.source_overdue WHERE false"),
    ("validation", "UPDATE public.source_overdue SET since = now() WHERE false"),
]


@pytest.mark.parametrize(("service", "statement"), FORBIDDEN)
def test_a_service_cannot_make_the_writes_that_matter(
    service: str, statement: str, logins: dict[str, str]
) -> None:
    assert refused(logins[service_role(service)], statement)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO public.respecs_approval SELECT * FROM public.respecs_approval",
        "UPDATE public.run_approval SET status = 'approved', decided_by = 'it_bob' WHERE false",
        "DELETE FROM public.respecs_approval WHERE false",
        "UPDATE public.source SET last_modified_date = now() WHERE false",
        "UPDATE public.source SET runtime_count = 0 WHERE false",
        "UPDATE public.source SET locked_by = NULL WHERE false",
        "DELETE FROM public.source WHERE false",
        "INSERT INTO public.source_change SELECT * FROM public.source_change",
        "UPDATE public.source_change SET changed_by = 'x' WHERE false",
        "DELETE FROM public.source_change WHERE false",
        "SELECT public.source_enable_due()",
        "DELETE FROM public.source_flow_history WHERE false",
        "INSERT INTO public.respecs_approval_revocation SELECT * FROM"
        " public.respecs_approval_revocation",
        "UPDATE public.backfill SET status = 'active' WHERE false",
        "INSERT INTO public.backfill SELECT * FROM public.backfill",
        "UPDATE public.source SET backfill_approval_days = 365 WHERE false",
        "DELETE FROM public.source_overdue WHERE false",
    ],
)
def test_a_person_decides_only_through_the_decision_functions_and_sets_only_settings(
    statement: str, logins: dict[str, str]
) -> None:
    assert refused(logins[OPERATORS_ROLE], statement)


def test_a_person_adds_a_source_and_the_scheduler_only_enables_the_due_ones(
    logins: dict[str, str],
) -> None:
    person, scheduler = logins[OPERATORS_ROLE], logins[service_role("scheduler")]
    assert not refused(
        person,
        "INSERT INTO public.source (source_id, name, source_type, connection, backdate_days,"
        " schedule_interval, schedule_cron, lateness_allowance, overdue_after_periods)"
        " SELECT source_id, name, source_type, connection, backdate_days, schedule_interval,"
        " schedule_cron, lateness_allowance, overdue_after_periods FROM public.source"
        " WHERE false",
    )
    # Not the two-person rule's threshold, nor a cursor, on a new source either
    for column in ("backfill_approval_days", "last_modified_date", "runtime_count"):
        assert refused(
            person,
            f"INSERT INTO public.source (source_id, {column})"
            f" SELECT source_id, {column} FROM public.source WHERE false",
        ), column
    assert not refused(scheduler, "SELECT public.source_enable_due()")


def test_the_respecs_role_updates_only_the_allowed_tables(logins: dict[str, str]) -> None:
    unlocking = logins[service_role("unlocking")]
    assert not refused(
        unlocking,
        "UPDATE public.listing_attributes SET value = value WHERE false",
        as_role=RESPECS_ROLE,
    )
    for statement in (
        "UPDATE public.source SET last_modified_date = now() WHERE false",
        "UPDATE public.source_run SET status = 'succeeded' WHERE false",
        "DELETE FROM public.listing_attributes WHERE false",
        "INSERT INTO public.listing_attributes SELECT * FROM public.listing_attributes",
    ):
        assert refused(unlocking, statement, as_role=RESPECS_ROLE), statement


# -- the two-person rule is the database's ----------------------------------------------------


def test_the_database_refuses_the_requester_and_the_superuser_whatever_the_caller(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a Re-specs run alice asked for (her login set the params), waiting for a person
    source_id = make_source(runtime_count=3)
    query = f"UPDATE public.listing_attributes SET value = 'm' WHERE source_id = '{source_id}'"
    with people[ALICE].transaction() as cur:
        cur.execute(
            "UPDATE public.source SET batch_execution_params = %s WHERE source_id = %s",
            (psycopg2.extras.Json({"flow_type": "Re-specs", "sql": query}), source_id),
        )
    execution = new_execution(source_id)
    validate(db, execution, approval_gate=True)
    with db.transaction() as cur:
        # (validation's insert: who asked is filled in by the database, whatever it says)
        cur.execute(
            "INSERT INTO public.run_approval (execution_arn, source_id, query, query_hash,"
            " requested_by, expires_at, task_token) VALUES (%s, %s, %s, %s, 'mallory',"
            " now() + interval '1 hour', 't')",
            (execution.arn, source_id, query, approvals.query_hash(query)),
        )
        cur.execute(
            "SELECT requested_by FROM public.run_approval WHERE execution_arn = %s",
            (execution.arn,),
        )
        assert cur.fetchone()["requested_by"] == ALICE

    # When alice calls the decision function herself, Then the database refuses her
    alice = people[ALICE]
    with (
        pytest.raises(approvals.DecisionRefused, match="second person"),
        alice.transaction() as cur,
    ):
        approvals.decide(cur, execution.arn, "approved", reason=None)
    # And the superuser is no person either
    with pytest.raises(approvals.DecisionRefused, match="superuser"), db.transaction() as cur:
        approvals.decide(cur, execution.arn, "approved", reason=None)

    # When bob approves, Then it is recorded as bob's login, and remembered
    with people[BOB].transaction() as cur:
        decision = approvals.decide(cur, execution.arn, "approved", reason=None)
    assert decision.person == BOB
    with db.transaction() as cur:
        [remembered] = approvals.remembered_for(cur, source_id)
    assert remembered["approved_by"] == BOB

    # When alice revokes it (any person may), Then it is gone and the revocation recorded
    with people[ALICE].transaction() as cur:
        revocation = approvals.revoke(cur, source_id, remembered["query_hash"], reason="wrong")
    assert (revocation["revoked_by"], revocation["approved_by"]) == (ALICE, BOB)
    with db.transaction() as cur:
        assert approvals.remembered_for(cur, source_id) == []


# -- passwords ---------------------------------------------------------------------------------


def test_the_embedded_server_refuses_a_wrong_or_missing_password(tmp_path: Path) -> None:
    """On a server of its own (whatever DATABASE_URL the tier uses), set up as `sourceflow up`
    sets one up: every login proves its password, a second start keeps asking."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, when XDG_RUNTIME_DIR is unset
        import pgserver

        server = pgserver.get_server(tmp_path / "pgdata", cleanup_mode="stop")
    try:
        admin = require_passwords(server, tmp_path)
        with closing(psycopg2.connect(admin)) as conn:
            assert conn.status is not None
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(make_dsn(admin, password="wrong")).close()
        with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
            psycopg2.connect(server.get_uri()).close()
        assert require_passwords(server, tmp_path) == admin
    finally:
        server.cleanup()


def test_a_run_request_names_the_login_that_asked_whatever_the_caller_says(
    db: Database, people: People, make_source: MakeSource
) -> None:
    source_id = make_source(runtime_count=3)
    with people[ALICE].transaction() as cur:
        cur.execute(
            "INSERT INTO public.run_request (execution_name, source_id) VALUES (%s, %s)",
            (f"{source_id}-asked", source_id),
        )
    # Not even the administrator writes someone else's name there
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO public.run_request (execution_name, source_id, requested_by)"
            " VALUES (%s, %s, 'mallory')",
            (f"{source_id}-forged", source_id),
        )
        cur.execute(
            "SELECT execution_name, requested_by FROM public.run_request WHERE source_id = %s",
            (source_id,),
        )
        asked = {row["execution_name"]: row["requested_by"] for row in cur.fetchall()}
        cur.execute("SELECT session_user AS login")
        admin = cur.fetchone()["login"]
    assert asked == {f"{source_id}-asked": ALICE, f"{source_id}-forged": admin}
