"""shared.store.db.dsn_from_secret: the database connection a Secrets Manager secret describes."""

from __future__ import annotations

import json

import pytest
from psycopg2.extensions import parse_dsn

from shared.store.db import dsn_from_secret

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sourceflow/dev/db-AbCdEf"
# A password no error message could contain by chance.
PASSWORD = "pw-Q7zK3-never-shown"


def test_an_rds_secret_becomes_a_connection_string() -> None:
    secret = {
        "engine": "postgres",
        "host": "db.example.internal",
        "port": 6432,
        "dbname": "warehouse",
        "username": "sourceflow_download",
        "password": "p@ss word'with quotes",
    }

    dsn = dsn_from_secret(json.dumps(secret), reference=SECRET_ARN)

    assert parse_dsn(dsn) == {
        "host": "db.example.internal",
        "port": "6432",
        "dbname": "warehouse",
        "user": "sourceflow_download",
        "password": "p@ss word'with quotes",
    }


def test_port_and_dbname_default_to_postgres_defaults() -> None:
    secret = {"host": "db", "username": "u", "password": "p"}

    assert parse_dsn(dsn_from_secret(json.dumps(secret), reference=SECRET_ARN)) == {
        "host": "db",
        "port": "5432",
        "dbname": "postgres",
        "user": "u",
        "password": "p",
    }


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        # cut off: not JSON, though it holds a password
        (f'{{"host": "db", "username": "u", "password": "{PASSWORD}"', "is not a JSON object"),
        # the bare password stored as the secret: a JSON string
        (json.dumps(PASSWORD), "is not a JSON object"),
        # the password under a key that is not "password"
        (json.dumps({"host": "db", "username": "u", "passwd": PASSWORD}), "has no text password"),
        # an empty password, the real one under a key of another case
        (
            json.dumps({"username": "u", "password": "", "Password": PASSWORD}),
            "has no text host, password",
        ),
        (json.dumps({"host": "db", "username": "u", "password": PASSWORD, "port": "x"}), "port"),
    ],
)
def test_a_secret_that_describes_no_connection_is_refused_without_showing_values(
    secret: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as refused:
        dsn_from_secret(secret, reference=SECRET_ARN)

    assert SECRET_ARN in str(refused.value)
    # every case holds PASSWORD somewhere, so this is checked in each
    assert PASSWORD in secret
    assert PASSWORD not in str(refused.value)
