"""A Re-specs query on the real server (issue 16): the server is the major the checker parses
for; a query that fails in PostgreSQL, whatever the error, fails its run by name at once with a
bounded one-line message and changes nothing; and the query runs with search_path pinned, so an
unqualified name cannot reach code outside pg_catalog."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from psycopg2 import sql

from services.unlocking.service import unlock_run
from services.validation.service import validate_run
from shared.errors import PermanentError
from shared.rules.respecs import PARSER_MAJOR_VERSION
from shared.runtime.catalogue import POSTGRES_MAJOR_VERSION
from shared.runtime.settings import RespecsSettings
from shared.store.db import Database
from shared.store.privileges import RESPECS_ROLE
from shared.store.sources import get_source
from tests.builders import Execution, records_modified
from tests.fakes import FakeConnectionCheck, FakeConnector, FakeSink
from tests.integration.conftest import (
    CURSOR,
    LEASE,
    MakeSource,
    NewExecution,
    clock,
    download,
    run_row,
    source_row_text,
)


@pytest.fixture
def table(db: Database) -> Iterator[str]:
    """An allow-listed attributes table of the test's own, with one row."""
    name = f"it_respecs_{uuid.uuid4().hex[:8]}"
    with db.transaction() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE public.{} (id int PRIMARY KEY, value text NOT NULL)").format(
                sql.Identifier(name)
            )
        )
        cur.execute(
            sql.SQL("INSERT INTO public.{} VALUES (1, 'sqft')").format(sql.Identifier(name))
        )
        # What infra.grants gives the Re-specs role on an allow-listed table
        cur.execute(
            sql.SQL("GRANT SELECT, UPDATE ON public.{} TO {}").format(
                sql.Identifier(name), sql.Identifier(RESPECS_ROLE)
            )
        )
    yield f"public.{name}"
    with db.transaction() as cur:
        cur.execute(sql.SQL("DROP TABLE public.{}").format(sql.Identifier(name)))


def respecs_for(table: str) -> RespecsSettings:
    return RespecsSettings(allowed_tables=frozenset({table}), statement_timeout_ms=5_000)


def downloaded_respecs_run(
    db: Database,
    make_source: MakeSource,
    new_execution: NewExecution,
    table: str,
    query: str,
) -> tuple[str, Execution]:
    """Given: a source in Re-specs with `query` on `table` (allow-listed), its run validated
    and downloaded; the source's id and the execution."""
    source_id = make_source(
        runtime_count=3, cursor=CURSOR, params={"type": "Re-specs", "sql": query}
    )
    execution = new_execution(source_id)
    validated = validate_run(
        execution.validation(),
        db=db,
        clock=clock,
        lease=LEASE,
        respecs_tables=respecs_for(table).allowed_tables,
        check_connection=FakeConnectionCheck(),
        approval_gate=False,
    )
    assert validated["decision"] == "run", validated
    records = records_modified(CURSOR + timedelta(days=1))
    download(db, execution, validated["plan"], FakeConnector(records), FakeSink())
    return source_id, execution


def values_of(db: Database, table: str) -> list[str]:
    with db.transaction() as cur:
        cur.execute(f"SELECT value FROM {table} ORDER BY id")  # the test's own table name
        return [row["value"] for row in cur.fetchall()]


def test_the_database_runs_the_major_the_checker_parses_for(db: Database) -> None:
    with db.transaction() as cur:
        cur.execute("SELECT current_setting('server_version_num')::int / 10000 AS major")
        row = cur.fetchone()
    assert row["major"] == POSTGRES_MAJOR_VERSION == PARSER_MAJOR_VERSION


@pytest.mark.parametrize(
    ("query", "sqlstate", "server_says"),
    [
        pytest.param(
            "UPDATE {t} SET value = to_timestamp(value, 'TZ')::text WHERE id = 1",
            "0A000",
            'formatting field "TZ" is only supported in to_char',
            id="feature-not-supported",
        ),
        pytest.param(
            "UPDATE {t} SET value = concat(" + ", ".join(["value"] * 101) + ") WHERE id = 1",
            "54023",
            "cannot pass more than 100 arguments to a function",
            id="program-limit-exceeded",
        ),
        pytest.param(
            "UPDATE {t} SET value = (1 / (id - 1))::text WHERE id = 1",
            "22012",
            "division by zero",
            id="division-by-zero",
        ),
        pytest.param(
            "UPDATE {t} SET value = NULL WHERE id = 1",
            "23502",
            'null value in column "value" of relation',
            id="constraint-violation",
        ),
    ],
)
def test_a_query_failing_in_postgres_fails_the_run_at_once_by_name_changing_nothing(
    db: Database,
    make_source: MakeSource,
    new_execution: NewExecution,
    table: str,
    query: str,
    sqlstate: str,
    server_says: str,
) -> None:
    # Given a downloaded Re-specs run whose allow-listed query fails in PostgreSQL
    source_id, execution = downloaded_respecs_run(
        db, make_source, new_execution, table, query.format(t=table)
    )
    before = source_row_text(db, source_id)

    # When unlocking ends it as succeeded
    with pytest.raises(PermanentError) as caught:
        unlock_run(execution.unlock_succeeded(), db=db, respecs=respecs_for(table))

    # Then it fails by name, at once, saying what the server said and what to do
    assert caught.value.error_name == "RespecsQueryFailed"
    message = str(caught.value)
    assert f"failed in PostgreSQL (SQLSTATE {sqlstate}): {server_says}" in message
    assert message.endswith("; correct the query and set the flow again")
    # And nothing moved: not the cursor, not the lock, not the ledger, not the data
    assert source_row_text(db, source_id) == before
    assert run_row(db, execution.arn)["status"] == "downloaded"  # type: ignore[index]
    assert values_of(db, table) == ["sqft"]
    # And the failure path then ends the run, the source unlocked
    ended = unlock_run(
        execution.unlock_failed(step="Unlock", error="RespecsQueryFailed", cause=message),
        db=db,
        respecs=respecs_for(table),
    )
    assert (ended["status"], ended["lock_released"]) == ("failed", True)
    source = get_source(db, source_id)
    assert source is not None
    assert (source["last_modified_date"], source["locked_by"]) == (CURSOR, None)


def test_the_servers_message_is_one_bounded_line_without_control_characters(
    db: Database,
    make_source: MakeSource,
    new_execution: NewExecution,
    table: str,
) -> None:
    # Given a query whose failure echoes a long value full of line breaks and terminal escapes
    hostile = "\\n\\x1b[31mFAKE ALERT\\r\\n" + "x" * 5_000
    query = f"UPDATE {table} SET id = E'{hostile}'::int WHERE id = 1"
    _, execution = downloaded_respecs_run(db, make_source, new_execution, table, query)

    # When unlocking runs it
    with pytest.raises(PermanentError) as caught:
        unlock_run(execution.unlock_succeeded(), db=db, respecs=respecs_for(table))

    # Then the error carries the server's message on one printable line, cut to its bound
    message = str(caught.value)
    assert caught.value.error_name == "RespecsQueryFailed"
    assert 'invalid input syntax for type integer: " [31mFAKE ALERT xxx' in message
    assert all(c.isprintable() for c in message), repr(message[:200])
    assert len(message) < 500
    assert "LINE 1" not in message  # not the query echoed back


def test_an_unqualified_operator_resolves_only_in_pg_catalog(
    db: Database,
    make_source: MakeSource,
    new_execution: NewExecution,
    table: str,
) -> None:
    # Given an operator someone defined in public, which writes when it is evaluated
    probe = f"it_respecs_probe_{uuid.uuid4().hex[:8]}"
    with db.transaction() as cur:
        cur.execute(f"CREATE TABLE public.{probe} (ran int)")
        cur.execute(
            f"CREATE FUNCTION public.{probe}(text, int) RETURNS boolean LANGUAGE sql"
            f" AS 'INSERT INTO public.{probe} VALUES (1); SELECT true'"
        )
        cur.execute(
            f"CREATE OPERATOR public.=== (LEFTARG = text, RIGHTARG = int,"
            f" FUNCTION = public.{probe})"
        )
        cur.execute(f"GRANT INSERT ON public.{probe} TO {RESPECS_ROLE}")  # so it could run
    try:
        # And a Re-specs query that uses it unqualified, which the checker cannot tell apart
        # from one of pg_catalog's
        query = f"UPDATE {table} SET value = 'sqm' WHERE id = 1 AND value === 1"
        _, execution = downloaded_respecs_run(db, make_source, new_execution, table, query)

        # When unlocking runs it
        with pytest.raises(PermanentError) as caught:
            unlock_run(execution.unlock_succeeded(), db=db, respecs=respecs_for(table))

        # Then the server looked in pg_catalog only: no such operator, and public's never ran
        assert caught.value.error_name == "RespecsQueryFailed"
        assert "operator does not exist: text === integer" in str(caught.value)
        with db.transaction() as cur:
            cur.execute(f"SELECT count(*) AS ran FROM public.{probe}")
            assert cur.fetchone()["ran"] == 0
        assert values_of(db, table) == ["sqft"]
    finally:
        with db.transaction() as cur:
            cur.execute("DROP OPERATOR public.=== (text, int)")
            cur.execute(f"DROP FUNCTION public.{probe}(text, int)")
            cur.execute(f"DROP TABLE public.{probe}")


def test_a_query_that_succeeds_leaves_the_search_path_as_it_found_it(
    db: Database,
    make_source: MakeSource,
    new_execution: NewExecution,
    table: str,
) -> None:
    # Given a downloaded Re-specs run whose query is fine
    query = f"UPDATE {table} SET value = upper(value) WHERE id = 1"
    _, execution = downloaded_respecs_run(db, make_source, new_execution, table, query)
    with db.transaction() as cur:
        cur.execute("SHOW search_path")
        search_path = cur.fetchone()["search_path"]

    # When unlocking runs it
    result = unlock_run(execution.unlock_succeeded(), db=db, respecs=respecs_for(table))

    # Then the run succeeded with the row changed, and the session's search_path is untouched
    assert result["status"] == "succeeded"
    assert values_of(db, table) == ["SQFT"]
    with db.transaction() as cur:
        cur.execute("SHOW search_path")
        assert cur.fetchone()["search_path"] == search_path
