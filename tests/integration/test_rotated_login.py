"""A service's database login rotated while its container keeps the old one, against a real
PostgreSQL: the next connection is refused, the login read again once, and the work goes on;
a login refused again is reported as any failure to connect is, after one reading again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn

from local.pg import transaction
from local.roles import rotate_password
from shared.errors import TransientError
from shared.store.db import Database, session_login


@pytest.fixture
def login(migrated_url: str) -> Iterator[str]:
    role = f"it_rotated_{uuid.uuid4().hex[:8]}"
    yield role
    with transaction(migrated_url) as cur:
        cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_rotated_login_is_read_again_once_and_the_work_goes_on(
    migrated_url: str, login: str
) -> None:
    # Given a service that read its login, then the login was rotated (and its secret)
    old = rotate_password(migrated_url, login)
    new = rotate_password(migrated_url, login)
    reads: list[str] = []

    def read_login_again() -> str:
        reads.append(login)
        return str(make_dsn(migrated_url, user=login, password=new))

    db = Database(make_dsn(migrated_url, user=login, password=old), read_dsn_again=read_login_again)

    # When it connects
    with db.transaction() as cur:
        connected_as = session_login(cur)

    # Then it read its login again once, and connected with it
    assert (connected_as, reads) == (login, [login])
    db.close()


def test_a_login_refused_after_reading_it_again_is_reported_as_before(
    migrated_url: str, login: str
) -> None:
    old = rotate_password(migrated_url, login)
    rotate_password(migrated_url, login)
    reads: list[str] = []

    def read_the_same_again() -> str:
        reads.append(login)
        return str(make_dsn(migrated_url, user=login, password=old))

    db = Database(
        make_dsn(migrated_url, user=login, password=old), read_dsn_again=read_the_same_again
    )

    refused = r"cannot connect to PostgreSQL.*authentication failed"
    with pytest.raises(TransientError, match=refused), db.transaction():
        pass

    assert reads == [login]
