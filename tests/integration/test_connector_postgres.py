"""The postgres connector against a real PostgreSQL: the check, the window pushed into the
WHERE clause, the server-side cursor, the names of what is wrong, a read resumed after a key,
the warning for a key column without an index, and the heartbeat through a slow first row."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from services.download.domain import Heartbeat
from services.download.service import download_run
from shared.connectors.base import InvalidConnection, SourceUnreachable, parse_connection
from shared.connectors.postgres import PostgresConnector
from shared.errors import TaskOver
from shared.rules.flows import Window, WindowField
from shared.store.db import Database
from tests.fakes import FakeSecretsManager, FakeSink, FakeTask, fake_access, source_secret
from tests.integration.conftest import CURSOR, MakeSource, NewExecution, new_claim, validate

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SECRET = source_secret("partner", "partner-db")


@pytest.fixture(scope="module")
def partner_schema(migrated_url: str) -> Iterator[str]:
    """A schema of its own holding a mixed-case table "Listings" of five rows; made once for
    the module, since its tests only read it."""
    schema = f"partner_{uuid.uuid4().hex[:8]}"
    with psycopg2.connect(migrated_url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE {}.{} (listing_id text PRIMARY KEY, updated_at timestamptz,"
                " updated_local timestamp, sold_on date, price numeric(12, 2), note text)"
            ).format(sql.Identifier(schema), sql.Identifier("Listings"))
        )
        for index, (updated, sold) in enumerate(
            [
                (T0, None),
                (T0 + HOUR, "2026-01-01"),
                (T0 + 2 * HOUR, "2025-12-31"),
                (T0 + 3 * HOUR, None),
                (None, "2026-06-30"),
            ]
        ):
            cur.execute(
                sql.SQL("INSERT INTO {}.{} VALUES (%s, %s, %s, %s, %s, %s)").format(
                    sql.Identifier(schema), sql.Identifier("Listings")
                ),
                (
                    f"L{4 - index}",  # keys run against the insert order
                    updated,
                    updated.replace(tzinfo=None) if updated else None,
                    sold,
                    100_000 + index + 0.25,
                    f"row {index}",
                ),
            )
    conn.close()
    yield schema
    with psycopg2.connect(migrated_url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    conn.close()


def a_connector(url: str, partner_schema: str, **changes: Any) -> PostgresConnector:
    """A connector reading `partner_schema` at `url`, whose password it gets from the secret
    (the connection names the secret; the DSN never holds the password)."""
    parts = parse_dsn(url)
    password = parts.pop("password", "no-password")
    connection = {
        "dsn": make_dsn(**parts),
        "password_secret": SECRET,
        "schema": partner_schema,
        "table": "Listings",
        "last_modified_column": "updated_at",
        "sold_date_column": "sold_on",
        "key_column": "listing_id",
        "fetch_size": 2,
        **changes,
    }
    settings = parse_connection("partner", "postgres", connection)
    # The test's database is on this machine, as the embedded stack's partner database is.
    access = fake_access(FakeSecretsManager({SECRET: password}), allow_loopback=True)
    return PostgresConnector.from_connection(
        "partner", settings, secrets=access.secrets, hosts=access.hosts
    )


def ids(connector: PostgresConnector, window: Window) -> list[str]:
    return [record["listing_id"] for record in connector.records(window)]


def test_a_good_table_passes_the_check(migrated_url: str, partner_schema: str) -> None:
    a_connector(migrated_url, partner_schema).check()


def test_the_window_is_filtered_in_the_database_and_ordered_by_the_key(
    migrated_url: str, partner_schema: str
) -> None:
    connector = a_connector(migrated_url, partner_schema)
    # (T0, T0 + 3h]: the row modified at T0 is out, the one at the end is in
    assert ids(connector, Window(WindowField.LAST_MODIFIED, T0, T0 + 3 * HOUR, False)) == [
        "L1",
        "L2",
        "L3",
    ]
    # [T0, T0 + 1h]: an inclusive start takes T0 in; a last-modified window is read past its
    # end (download counts what is stamped after it)
    assert ids(connector, Window(WindowField.LAST_MODIFIED, T0, T0 + HOUR, True)) == [
        "L1",
        "L2",
        "L3",
        "L4",
    ]
    # Sold since 1 January 2026, on a date column; unsold rows (NULL) are never in a window
    sold = Window(WindowField.SOLD_DATE, datetime(2026, 1, 1, tzinfo=UTC), T0, True)
    assert ids(connector, sold) == ["L0", "L3"]


def test_records_keep_the_column_names_and_postgres_json_types(
    migrated_url: str, partner_schema: str
) -> None:
    connector = a_connector(migrated_url, partner_schema)
    window = Window(WindowField.LAST_MODIFIED, T0, T0 + HOUR, False)
    [record] = [r for r in connector.records(window) if r["listing_id"] == "L3"]
    assert record == {
        "listing_id": "L3",
        "updated_at": "2026-11-20T13:00:00+00:00",
        "updated_local": "2026-11-20T13:00:00",
        "sold_on": "2026-01-01",
        "price": 100001.25,
        "note": "row 1",
    }
    assert connector.last_modified(record) == T0 + HOUR


def test_a_timestamp_column_without_a_zone_is_read_as_utc(
    migrated_url: str, partner_schema: str
) -> None:
    connector = a_connector(migrated_url, partner_schema, last_modified_column="updated_local")
    connector.check()
    window = Window(WindowField.LAST_MODIFIED, T0 + HOUR, T0 + 3 * HOUR, False)
    records = list(connector.records(window))
    assert [record["listing_id"] for record in records] == ["L1", "L2"]
    assert max(map(connector.last_modified, records)) == T0 + 3 * HOUR  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"table": "listings"}, "there is no table or view"),  # names are case-sensitive
        ({"schema": "no_such_schema"}, "there is no table or view"),
        ({"sold_date_column": "sold_date"}, 'column "sold_date" does not exist'),
        ({"key_column": "id"}, 'column "id" does not exist'),
        ({"last_modified_column": "price"}, "column 'price' of partner_"),
    ],
)
def test_what_is_wrong_with_the_table_is_named_by_the_check(
    migrated_url: str, partner_schema: str, changes: dict[str, str], says: str
) -> None:
    connector = a_connector(migrated_url, partner_schema, **changes)
    with pytest.raises(InvalidConnection, match=says) as caught:
        connector.check()
    assert "fix connection." in str(caught.value) or "*_column" in str(caught.value)


def test_a_server_that_does_not_answer_is_unreachable(partner_schema: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    connector = a_connector(f"host=127.0.0.1 port={dead_port} dbname=x user=y", partner_schema)
    with pytest.raises(SourceUnreachable, match="cannot connect to PostgreSQL"):
        connector.check()


# -- a download resumed, and a first row that comes late (issue 17) --------------------------------


def partner_sql(url: str, statement: str, schema: str) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(statement.replace("{schema}", sql.Identifier(schema).as_string(conn)))
    conn.close()


def test_a_resumed_read_goes_on_after_the_key_whatever_its_type(
    migrated_url: str, partner_schema: str
) -> None:
    # Given a table keyed by a number, a key held by two rows, and rows without a key
    partner_sql(
        migrated_url,
        "CREATE TABLE {schema}.numbered (k numeric, v text, updated_at timestamptz);"
        " INSERT INTO {schema}.numbered VALUES (10, 'a', now()), (9.5, 'b', now()),"
        " (10, 'c', now()), (NULL, 'd', now()), (100, 'e', now())",
        partner_schema,
    )
    connector = a_connector(migrated_url, partner_schema, table="numbered", key_column="k")
    window = Window(WindowField.LAST_MODIFIED, T0, T0, False)
    read = [(record["v"], connector.position) for record in connector.records(window)]
    assert [v for v, _ in read] in (["b", "a", "c", "e", "d"], ["b", "c", "a", "e", "d"])
    # When a later read resumes after each place it may, Then it reads the rows after it
    for index, (_, position) in enumerate(read):
        if position is not None:
            rest = [
                r["v"]
                for r in a_connector(
                    migrated_url, partner_schema, table="numbered", key_column="k"
                ).records(window, position)
            ]
            assert sorted(rest) == sorted(v for v, _ in read[index + 1 :]), position
    assert [position["after_key"] for _, position in read if position] == ["9.5", "10", "100"]


def test_a_key_column_without_an_index_is_warned_of_and_one_with_an_index_is_not(
    migrated_url: str, partner_schema: str
) -> None:
    partner_sql(
        migrated_url,
        "CREATE TABLE {schema}.unindexed (k text, updated_at timestamptz)",
        partner_schema,
    )
    window = Window(WindowField.LAST_MODIFIED, T0, T0, False)
    unindexed = a_connector(migrated_url, partner_schema, table="unindexed", key_column="k")
    list(unindexed.records(window))
    [warning] = unindexed.warnings
    assert f"'k' of {partner_schema}.unindexed has no index" in warning
    keyed = a_connector(migrated_url, partner_schema)  # "Listings": its key is its primary key
    list(keyed.records(window))
    assert keyed.warnings == []


@pytest.fixture(scope="module")
def slow_view(migrated_url: str, partner_schema: str) -> str:
    """A view over a copy of "Listings" without an index, whose every row takes 0.4 s to
    compute: read in key order, a sort of all five rows comes before the first, 2 s."""
    partner_sql(
        migrated_url,
        'CREATE TABLE {schema}.unsorted AS SELECT * FROM {schema}."Listings";'
        " CREATE VIEW {schema}.slow AS SELECT * FROM {schema}.unsorted"
        " WHERE length(pg_sleep(0.4)::text) >= 0",
        partner_schema,
    )
    return "slow"


def test_the_download_heartbeats_while_a_partner_query_starts(
    migrated_url: str, partner_schema: str, slow_view: str
) -> None:
    # Given a heartbeat due every 0.1 s while the download waits for its first row
    task = FakeTask()
    heartbeat = Heartbeat(send=task.send, renew_lease=task.renew_lease, interval_seconds=0.1)
    connector = a_connector(migrated_url, partner_schema, table=slow_view)
    window = Window(WindowField.LAST_MODIFIED, T0, T0, True)
    # When the view is read, Then its rows come, and the task heard from the download meanwhile
    started = time.monotonic()
    rows = list(connector.records(window, waiting=heartbeat.while_waiting))
    assert len(rows) == 4 and time.monotonic() - started >= 1.5
    assert task.beats >= 5


def test_a_partner_query_is_cancelled_when_a_heartbeat_says_the_download_must_stop(
    migrated_url: str, partner_schema: str, slow_view: str
) -> None:
    # Given a task that timed out while the download waits for its first row
    task = FakeTask(over=True)
    heartbeat = Heartbeat(send=task.send, renew_lease=task.renew_lease, interval_seconds=0.1)
    connector = a_connector(migrated_url, partner_schema, table=slow_view)
    window = Window(WindowField.LAST_MODIFIED, T0, T0, True)
    # Then the query is cancelled at the first beat and the download stops by the beat's error
    started = time.monotonic()
    with pytest.raises(TaskOver):
        list(connector.records(window, waiting=heartbeat.while_waiting))
    assert time.monotonic() - started < 1.5


def test_a_download_of_a_table_whose_first_row_comes_late_keeps_its_task_alive(
    db: Database,
    make_source: MakeSource,
    new_execution: NewExecution,
    sink: FakeSink,
    migrated_url: str,
    partner_schema: str,
    slow_view: str,
) -> None:
    # Given a run downloading the slow view, its heartbeat due every 0.1 s
    execution = new_execution(make_source(cursor=CURSOR))
    plan = validate(db, execution)["plan"]
    task = FakeTask()
    heartbeat = Heartbeat(send=task.send, renew_lease=task.renew_lease, interval_seconds=0.1)
    connector = a_connector(migrated_url, partner_schema, table=slow_view)

    # When it downloads
    result = download_run(
        execution.download(plan),
        db=db,
        connector_for=lambda *_: connector,
        sink=sink,
        heartbeat=heartbeat,
        part_max_records=100,
        claim=new_claim(),
    )

    # Then the task heard from it all through the 2 s before the first row, not only per row
    assert result["records"] == 4
    assert task.beats >= 10, task.beats
