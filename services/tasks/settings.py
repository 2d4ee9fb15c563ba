"""The tasks service's settings, read once at cold start."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psycopg2
from psycopg2.extensions import parse_dsn

from shared.rules.workflows import SQL_TARGETS_VARIABLE, parse_sql_targets
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

_SECRET_ARN_PREFIX = "arn:aws:secretsmanager:"


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
            sql_targets=sql_targets(os.environ.get(SQL_TARGETS_VARIABLE, ""), read_secret),
            sql_statement_timeout_ms=env_int(
                "SQL_TASK_STATEMENT_TIMEOUT_MS", RESPECS_STATEMENT_TIMEOUT_MS, minimum=1
            ),
        )


def sql_targets(raw: str, read_secret: Callable[[str], str]) -> dict[str, str]:
    """`{"warehouse": DSN or a Secrets Manager database secret's ARN, ...}` → name → DSN.
    Empty: no target, every sql task fails by name."""
    try:
        targets = parse_sql_targets(raw)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    try:
        dsns = {
            name: dsn_from_secret(read_secret(value), reference=value)
            if value.startswith(_SECRET_ARN_PREFIX)
            else value
            for name, value in targets.items()
        }
    except ValueError as exc:  # a secret that is no database secret: named, never its value
        raise SettingsError(str(exc)) from None
    for dsn in dsns.values():
        # A target's password is redacted like the service's own, wherever it might surface.
        with contextlib.suppress(psycopg2.ProgrammingError):  # connecting will say what is wrong
            remember_secret(parse_dsn(dsn).get("password", ""))
    return dsns
