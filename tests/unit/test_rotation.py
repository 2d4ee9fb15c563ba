"""shared.rules.rotation: a refused secret is read again once, and the attempt made once more;
and the services' database (ConsumerSettings.database) reads its login again from its secret,
never from DATABASE_URL."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from shared.rules.rotation import once_more_with_the_secret_read_again
from shared.runtime.settings import ConsumerSettings

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:sourceflow/dev/db-AbCdEf"


class Refused(Exception):
    pass


def attempts(*outcomes: Exception | str) -> tuple[Callable[[], str], list[int]]:
    """An attempt that raises or returns each outcome in turn, and the count of calls."""
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return attempt, calls


def test_an_accepted_secret_is_not_read_again() -> None:
    attempt, calls = attempts("ok")
    read_again: list[int] = []

    result = once_more_with_the_secret_read_again(
        attempt,
        refused=lambda exc: isinstance(exc, Refused),
        read_again=lambda: read_again.append(1),
    )

    assert (result, len(calls), read_again) == ("ok", 1, [])


def test_a_refused_secret_is_read_again_and_the_attempt_made_once_more() -> None:
    attempt, calls = attempts(Refused("old password"), "ok")
    read_again: list[int] = []

    result = once_more_with_the_secret_read_again(
        attempt,
        refused=lambda exc: isinstance(exc, Refused),
        read_again=lambda: read_again.append(1),
    )

    assert (result, len(calls), read_again) == ("ok", 2, [1])


def test_a_second_refusal_is_reported_and_the_secret_read_again_only_once() -> None:
    attempt, calls = attempts(Refused("old password"), Refused("still refused"), "never")
    read_again: list[int] = []

    with pytest.raises(Refused, match="still refused"):
        once_more_with_the_secret_read_again(
            attempt,
            refused=lambda exc: isinstance(exc, Refused),
            read_again=lambda: read_again.append(1),
        )

    assert (len(calls), read_again) == (2, [1])


def test_an_error_that_is_no_refusal_is_reported_at_once() -> None:
    attempt, calls = attempts(TimeoutError("no answer"), "never")
    read_again: list[int] = []

    with pytest.raises(TimeoutError):
        once_more_with_the_secret_read_again(
            attempt,
            refused=lambda exc: isinstance(exc, Refused),
            read_again=lambda: read_again.append(1),
        )

    assert (len(calls), read_again) == (1, [])


def secret(password: str) -> str:
    return json.dumps(
        {"host": "db.internal", "username": "sourceflow_download", "password": password}
    )


def test_a_service_whose_login_came_from_its_secret_reads_the_secret_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_SECRET_ARN", SECRET_ARN)
    stored = {SECRET_ARN: secret("first-password")}
    reads: list[str] = []

    def read_secret(arn: str) -> str:
        reads.append(arn)
        return stored[arn]

    settings = ConsumerSettings.from_env(read_secret=read_secret)
    database = settings.database("download", read_secret=read_secret)
    stored[SECRET_ARN] = secret("rotated-password")

    assert database._read_dsn_again is not None
    assert "password=rotated-password" in database._read_dsn_again()
    assert reads == [SECRET_ARN, SECRET_ARN]


def test_a_service_given_database_url_has_no_secret_to_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://local/sourceflow")
    monkeypatch.setenv("DATABASE_SECRET_ARN", SECRET_ARN)

    settings = ConsumerSettings.from_env(read_secret=lambda arn: pytest.fail("no secret is read"))

    assert settings.database("download")._read_dsn_again is None
