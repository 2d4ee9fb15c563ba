"""The postgres connector against a real PostgreSQL: the check, the window pushed into the
WHERE clause, the server-side cursor, and the names of what is wrong."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from shared.connectors.base import InvalidConnection, SourceUnreachable, parse_connection
from shared.connectors.postgres import PostgresConnector
from shared.rules.flows import Window, WindowField
from tests.fakes import FakeSecretsManager, fake_access, source_secret

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
