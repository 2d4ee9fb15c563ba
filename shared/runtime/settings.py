"""Reading configuration from the environment once, with errors that say what to set."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg2
from botocore.exceptions import BotoCoreError, ClientError
from psycopg2.extensions import parse_dsn

from shared.errors import TransientError
from shared.runtime import aws
from shared.runtime.catalogue import CLOUD_TIMEOUTS, RESPECS_STATEMENT_TIMEOUT_MS
from shared.runtime.redaction import remember_secret
from shared.store.db import Database, dsn_from_secret

N = TypeVar("N", int, float)


class SettingsError(RuntimeError):
    pass


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise SettingsError(f"environment variable {name} is not set; set it before starting")
    return value


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    return _env_number(name, default, minimum, int, "a whole number")


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    return _env_number(name, default, minimum, float, "a number")


def _env_number(name: str, default: N, minimum: N, parse: Callable[[str], N], kind: str) -> N:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(f"environment variable {name}={raw!r} is not {kind}") from None
    if value < minimum:
        raise SettingsError(f"environment variable {name}={value} must be at least {minimum}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise SettingsError(f"environment variable {name}={raw!r} must be true or false")
    return value == "true"


def read_database_secret(secret_id: str) -> str:
    """The text of the Secrets Manager secret that describes the database connection."""
    try:
        return str(
            aws.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise SettingsError(f"cannot read the database secret {secret_id} ({code})") from exc
    except BotoCoreError as exc:
        raise SettingsError(
            f"cannot read the database secret {secret_id} ({type(exc).__name__})"
        ) from exc


def database_url(read_secret: Callable[[str], str] = read_database_secret) -> str:
    """DATABASE_URL when it is set (the embedded stack, tests); otherwise the connection the
    Secrets Manager secret named by DATABASE_SECRET_ARN describes (the cloud), read once at
    cold start, so the password lives in the secret and never in the function's configuration.
    """
    url = os.environ.get("DATABASE_URL")
    secret_arn = database_secret_arn()
    if not url and not secret_arn:
        raise SettingsError(
            "neither DATABASE_URL nor DATABASE_SECRET_ARN is set; set one before starting"
        )
    return url or _url_from_secret(str(secret_arn), read_secret)


def database_secret_arn() -> str | None:
    """The secret the database login is read from: DATABASE_SECRET_ARN, unless DATABASE_URL
    is set (which wins)."""
    if os.environ.get("DATABASE_URL"):
        return None
    return os.environ.get("DATABASE_SECRET_ARN") or None


def _url_from_secret(secret_arn: str, read_secret: Callable[[str], str]) -> str:
    try:
        url = dsn_from_secret(read_secret(secret_arn), reference=secret_arn)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    # The service's own password is redacted like a source's secret, wherever it might surface.
    with contextlib.suppress(psycopg2.ProgrammingError):  # connecting will say what is wrong
        remember_secret(parse_dsn(url).get("password", ""))
    return url


def _url_read_again(secret_arn: str, read_secret: Callable[[str], str]) -> str:
    """The login, read again after PostgreSQL refused the one read before (a rotation)."""
    try:
        return _url_from_secret(secret_arn, read_secret)
    except SettingsError as exc:
        raise TransientError(
            f"PostgreSQL refused the login, and reading it again failed: {exc}",
            error_name="DatabaseUnavailable",
        ) from None


@dataclass(frozen=True)
class SourceAccessSettings:
    """What validation and download may use to reach sources (shared.connectors.SourceAccess).

    `connection_secrets_prefix` is the templates' ConnectionSecretsPrefix (by default
    `sourceflow/<stage>/sources/`, shared.runtime.secrets.connection_secrets_prefix): a source
    may use the secrets under `<prefix><source_id>/`, and the role may read nothing else.
    `reserved_secrets` are the database secrets of this service and of the core, which no
    source may use even if one is named under the prefix. `allow_loopback` is set by the
    embedded stack alone (local/stack.py), whose vendor and partner database are on this
    machine.
    """

    connection_secrets_prefix: str
    reserved_secrets: frozenset[str]
    allow_loopback: bool

    @classmethod
    def from_env(cls) -> SourceAccessSettings:
        prefix = env_str("CONNECTION_SECRETS_PREFIX")
        if not prefix.endswith("/"):
            raise SettingsError(
                f"environment variable CONNECTION_SECRETS_PREFIX={prefix!r} must end with /, "
                "so that each source's secrets are under <prefix><source_id>/"
            )
        reserved = (
            os.environ.get(name) for name in ("DATABASE_SECRET_ARN", "CORE_DATABASE_SECRET_ARN")
        )
        return cls(
            connection_secrets_prefix=prefix,
            reserved_secrets=frozenset(arn for arn in reserved if arn),
            allow_loopback=env_bool("ALLOW_LOOPBACK_SOURCES", False),
        )


def lock_lease_seconds() -> int:
    """How long a source's lock lasts without renewal; validation and download must agree."""
    return env_int("LOCK_LEASE_SECONDS", CLOUD_TIMEOUTS.lock_lease_seconds, minimum=30)


@dataclass(frozen=True)
class ConsumerSettings:
    """What every queue consumer (validation, download, unlocking, scheduler) needs."""

    database_url: str
    # Must equal the work queue's redrive maxReceiveCount: the last delivery reports failure.
    max_receives: int
    retry_backoff_seconds: float
    # The secret database_url was read from (the cloud); None when DATABASE_URL gave it.
    database_secret_arn: str | None = None

    @classmethod
    def from_env(
        cls, *, read_secret: Callable[[str], str] = read_database_secret
    ) -> ConsumerSettings:
        return cls(
            database_secret_arn=database_secret_arn(),
            database_url=database_url(read_secret),
            max_receives=env_int("MAX_RECEIVE_COUNT", CLOUD_TIMEOUTS.max_receive_count, minimum=1),
            retry_backoff_seconds=env_float(
                "RETRY_BACKOFF_SECONDS", CLOUD_TIMEOUTS.retry_backoff_seconds
            ),
        )

    def database(
        self, service: str, *, read_secret: Callable[[str], str] = read_database_secret
    ) -> Database:
        """The service's database: its login read again from its secret when PostgreSQL
        refuses the one read at cold start (a rotation, shared/rules/rotation.py)."""
        read_again = None
        if self.database_secret_arn is not None:
            read_again = functools.partial(_url_read_again, self.database_secret_arn, read_secret)
        return Database(
            self.database_url,
            application_name=f"sourceflow-{service}",
            read_dsn_again=read_again,
        )


@dataclass(frozen=True)
class RespecsSettings:
    """Which tables a Re-specs query may touch, and how long it may run.

    The allow-list is empty unless the deployment names tables: nothing is allowed by default.
    """

    allowed_tables: frozenset[str]
    statement_timeout_ms: int

    @classmethod
    def from_env(cls) -> RespecsSettings:
        from shared.rules.respecs import parse_allowed_tables

        return cls(
            allowed_tables=parse_allowed_tables(os.environ.get("RESPECS_ALLOWED_TABLES", "")),
            statement_timeout_ms=env_int(
                "RESPECS_STATEMENT_TIMEOUT_MS", RESPECS_STATEMENT_TIMEOUT_MS, minimum=1
            ),
        )
