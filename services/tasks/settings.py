"""The tasks service's settings, read once at cold start."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psycopg2
from psycopg2.extensions import parse_dsn

from shared.rules.workflows import SQL_TARGETS_VARIABLE
from shared.runtime.catalogue import RESPECS_STATEMENT_TIMEOUT_MS
from shared.runtime.redaction import remember_secret
from shared.runtime.settings import (
    ConsumerSettings,
    SettingsError,
    env_int,
    env_str,
    read_database_secret,
)
from shared.store.db import dsn_from_secret

# Each allow-listed target's connection: a libpq DSN in WORKFLOW_SQL_TARGET_<NAME> (the
# embedded stack, tests), or else the database secret `<SQL_TARGET_SECRETS_PREFIX><name>` as RDS
# keeps it (the cloud: service.yaml sets the prefix, sourceflow/<stage>/sql-targets/, and lets
# the tasks function read only the secrets under it).
TARGET_VARIABLE_PREFIX = "WORKFLOW_SQL_TARGET_"
SECRETS_PREFIX_VARIABLE = "SQL_TARGET_SECRETS_PREFIX"


def target_variable(name: str) -> str:
    return TARGET_VARIABLE_PREFIX + name.upper()


@dataclass(frozen=True)
class Settings:
    consumer: ConsumerSettings
    event_bus_name: str
    alerts_topic_arn: str
    notifications_topic_arn: str
    # The databases a workflow's sql task may run against, by the name its definition gives:
    # the allow-list (nothing else is reachable), each a libpq DSN of a login with only what
    # the tasks need.
    sql_targets: Mapping[str, str]
    # How long a sql task's statement may run: the same discipline, and default, as a Re-specs
    # query's.
    sql_statement_timeout_ms: int

    @classmethod
    def from_env(cls, *, read_secret: Callable[[str], str] = read_database_secret) -> Settings:
        return cls(
            consumer=ConsumerSettings.from_env(),
            event_bus_name=env_str("EVENT_BUS_NAME"),
            alerts_topic_arn=env_str("ALERTS_TOPIC_ARN"),
            notifications_topic_arn=env_str("NOTIFICATIONS_TOPIC_ARN"),
            sql_targets=sql_targets(
                os.environ.get(SQL_TARGETS_VARIABLE, ""), os.environ, read_secret
            ),
            sql_statement_timeout_ms=env_int(
                "SQL_TASK_STATEMENT_TIMEOUT_MS", RESPECS_STATEMENT_TIMEOUT_MS, minimum=1
            ),
        )


def sql_targets(
    names: str, environ: Mapping[str, str], read_secret: Callable[[str], str]
) -> dict[str, str]:
    """The allow-listed targets (SQL_TARGETS_VARIABLE: names, comma-separated), each name to
    its DSN. No name: no target, every sql task fails by name."""
    dsns = {}
    secrets_prefix = environ.get(SECRETS_PREFIX_VARIABLE, "")
    for name in filter(None, (part.strip() for part in names.split(","))):
        dsn = environ.get(target_variable(name), "")
        if not dsn and not secrets_prefix:
            raise SettingsError(
                f"{SQL_TARGETS_VARIABLE} allows the sql target {name!r}, but neither "
                f"{target_variable(name)} (its DSN) nor {SECRETS_PREFIX_VARIABLE} (where its "
                "database secret is) is set; set one"
            )
        if not dsn:
            try:
                secret = secrets_prefix + name
                dsn = dsn_from_secret(read_secret(secret), reference=secret)
            except ValueError as exc:
                raise SettingsError(str(exc)) from None
        dsns[name] = dsn
        # A target's password is redacted like the service's own, wherever it might surface.
        with contextlib.suppress(psycopg2.ProgrammingError):  # connecting will say what is wrong
            remember_secret(parse_dsn(dsns[name]).get("password", ""))
    return dsns
