"""shared.runtime.settings: where a consumer's database connection comes from."""

from __future__ import annotations

import json

import pytest
from psycopg2.extensions import parse_dsn

from shared.runtime.settings import ConsumerSettings, SettingsError, database_url

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sourceflow/dev/db-AbCdEf"
RDS_SECRET = json.dumps(
    {"host": "db.internal", "port": 5432, "username": "sourceflow_unlocking", "password": "s3"}
)


class FakeSecrets:
    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.reads: list[str] = []

    def __call__(self, secret_id: str) -> str:
        self.reads.append(secret_id)
        return self._values[secret_id]


@pytest.fixture(autouse=True)
def no_database_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_SECRET_ARN", raising=False)


def test_database_url_wins_and_no_secret_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://local/sourceflow")
    monkeypatch.setenv("DATABASE_SECRET_ARN", SECRET_ARN)
    secrets = FakeSecrets({})

    assert database_url(secrets) == "postgresql://local/sourceflow"
    assert secrets.reads == []


def test_in_the_cloud_the_secret_describes_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_SECRET_ARN", SECRET_ARN)
    secrets = FakeSecrets({SECRET_ARN: RDS_SECRET})

    settings = ConsumerSettings.from_env(read_secret=secrets)

    assert parse_dsn(settings.database_url)["user"] == "sourceflow_unlocking"
    assert secrets.reads == [SECRET_ARN]


def test_without_either_setting_the_error_says_what_to_set() -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL nor DATABASE_SECRET_ARN"):
        database_url(FakeSecrets({}))


def test_a_malformed_secret_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_SECRET_ARN", SECRET_ARN)

    with pytest.raises(SettingsError, match="has no text host"):
        database_url(FakeSecrets({SECRET_ARN: json.dumps({"username": "u", "password": "p"})}))
