"""shared.db.dsn_from_secret: the database connection a Secrets Manager secret describes."""

from __future__ import annotations

import json

import pytest
from psycopg2.extensions import parse_dsn

from shared.db import dsn_from_secret

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sourceflow/dev/db-AbCdEf"


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
        ("not json", "is not a JSON object"),
        ('"a string"', "is not a JSON object"),
        (json.dumps({"host": "db", "username": "u"}), "has no text password"),
        (json.dumps({"username": "u", "password": ""}), "has no text host, password"),
        (json.dumps({"host": "db", "username": "u", "password": "p", "port": "x"}), "port"),
    ],
)
def test_a_secret_that_describes_no_connection_is_refused_without_showing_values(
    secret: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as refused:
        dsn_from_secret(secret, reference=SECRET_ARN)

    assert SECRET_ARN in str(refused.value)
    assert '"p"' not in str(refused.value)
