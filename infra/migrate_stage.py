"""Migrations and database roles for a deployed stage: `make migrate STAGE=dev`, which
`make deploy` runs after the core stack and before the services (infra/deploy.py).

    python -m infra.migrate_stage --stage dev [--respecs-tables public.listing_attributes]

(without --respecs-tables, the Re-specs role keeps the tables it may update now).

1. It connects as the administrator the stage's database secret describes: the core stack's
   `DatabaseSecretArn`, read back from `/sourceflow/<stage>/core/database-secret-arn`
   (`DATABASE_URL`, when set, wins, as it does for the functions).
2. It applies the migrations (infra/migrate.py): each once, in a transaction of its own (a
   failing one leaves nothing of itself), and an applied one that was edited is refused.
3. It sets every role's privileges to exactly shared/store/privileges.py's (infra/grants.py).
4. It gives each service that has a database secret of its own, `sourceflow/<stage>/database/
   <service>` (what its stack's `ServiceDatabaseSecretArn` names), its login: the secret's
   username must be the service's role (`sourceflow_<service>`), and the role gets LOGIN and
   the secret's password. The functions connect with the password their secret holds
   (shared/runtime/settings.py), and RDS refuses a password to a member of `rds_iam`, so a
   service's role is not given `rds_iam` (people's logins are: `python -m infra.grants
   --person`). A service without a secret of its own connects as the core secret's login; its
   role is given no login here.

Running it again changes nothing: a service whose login already accepts its secret's password
is left alone, and the grants converge to the same list.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from botocore.exceptions import BotoCoreError, ClientError
from psycopg2.extensions import make_dsn, parse_dsn

from infra.deploy import STAGE_PATTERN
from infra.grants import GrantsError, apply_grants, parse_tables, set_login
from infra.migrate import MIGRATIONS_DIR, MigrationError, apply_migrations
from infra.resources import SERVICES, Names
from shared.runtime import aws
from shared.runtime.settings import SettingsError, read_database_secret
from shared.store.db import dsn_from_secret
from shared.store.privileges import RESPECS_ROLE, service_role

# Reads a secret's text by name or ARN; None when there is no such secret.
ReadSecret = Callable[[str], str | None]


class StageMigrationError(RuntimeError):
    pass


def service_secret_name(stage: str, service: str) -> str:
    """Where a service's own database secret lives (its stack's ServiceDatabaseSecretArn)."""
    return f"sourceflow/{stage}/database/{service}"


@dataclass(frozen=True)
class StageMigration:
    applied: list[str]  # the migrations applied now
    logins_set: list[str]  # the service roles whose login or password was set now
    without_login: list[str]  # the service roles given no login (no secret of their own)


def migrate_stage(
    admin_url: str,
    *,
    respecs_tables: frozenset[str] | None,
    service_passwords: Mapping[str, str],
    migrations: Path = MIGRATIONS_DIR,
) -> StageMigration:
    """Apply the migrations, every role's privileges, and the services' logins
    (`service_passwords`: service -> the password its own secret holds). `respecs_tables`
    None keeps the tables the Re-specs role may update now."""
    applied = apply_migrations(admin_url, migrations)
    with _transaction(admin_url) as cur:
        if respecs_tables is None:
            respecs_tables = respecs_tables_now(cur)
        apply_grants(cur, respecs_tables)
    logins_set = []
    for service, password in service_passwords.items():
        role = service_role(service)
        if not _accepts(admin_url, role, password):
            with _transaction(admin_url) as cur:
                set_login(cur, role, password)
            logins_set.append(role)
    without_login = [service_role(s) for s in SERVICES if s not in service_passwords]
    return StageMigration(applied, logins_set, without_login)


def respecs_tables_now(cur: Any) -> frozenset[str]:
    """The tables the Re-specs role may update now (a deploy that does not name them keeps
    them, as its stacks keep a parameter not given)."""
    cur.execute(
        "SELECT DISTINCT table_schema || '.' || table_name"
        " FROM information_schema.column_privileges"
        " WHERE grantee = %s AND privilege_type = 'UPDATE'",
        (RESPECS_ROLE,),
    )
    return frozenset(row[0] for row in cur.fetchall())


def service_passwords(stage: str, read_secret: ReadSecret) -> dict[str, str]:
    """The password of each service that has a database secret of its own, checked to name
    the service's role."""
    passwords = {}
    for service in SERVICES:
        name = service_secret_name(stage, service)
        text = read_secret(name)
        if text is None:
            continue
        try:
            # Read as the service reads it (a connection), so the same shape is required.
            login = parse_dsn(dsn_from_secret(text, reference=name))
        except ValueError as exc:
            raise StageMigrationError(str(exc)) from None
        role = service_role(service)
        if login["user"] != role:
            raise StageMigrationError(
                f"database secret {name} names the login {login['user']!r}; the {service} "
                f"service's role is {role!r}: set its username to {role!r}"
            )
        password = login["password"]
        passwords[service] = password
    return passwords


def admin_url(stage: str, *, ssm: Any, read_secret: Callable[[str], str]) -> str:
    """DATABASE_URL when set; otherwise the connection the core's database secret describes."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    parameter = Names(stage).parameter("core", "database-secret-arn")
    try:
        arn = str(ssm.get_parameter(Name=parameter)["Parameter"]["Value"])
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise StageMigrationError(
            f"cannot read {parameter} ({code}): deploy the core stack first "
            f"(make deploy-core STAGE={stage}), or set DATABASE_URL to an administrator's URL"
        ) from None
    try:
        return dsn_from_secret(read_secret(arn), reference=arn)
    except ValueError as exc:
        raise StageMigrationError(str(exc)) from None


def _read_secret_if_any(secretsmanager: Any) -> ReadSecret:
    def read(name: str) -> str | None:
        try:
            return str(secretsmanager.get_secret_value(SecretId=name)["SecretString"])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                return None
            raise StageMigrationError(f"cannot read the database secret {name} ({code})") from None

    return read


def _accepts(admin_url: str, role: str, password: str) -> bool:
    """Whether the database lets `role` in with `password` now."""
    try:
        with closing(psycopg2.connect(make_dsn(admin_url, user=role, password=password))):
            return True
    except psycopg2.OperationalError:
        return False


@contextmanager
def _transaction(url: str) -> Iterator[Any]:
    with closing(psycopg2.connect(url)) as conn, conn, conn.cursor() as cur:
        yield cur


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.migrate_stage", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--stage", required=True)
    parser.add_argument(
        "--respecs-tables",
        default=None,
        help="schema.table, comma-separated (by default those the Re-specs role may update now)",
    )
    args = parser.parse_args(argv)
    if not STAGE_PATTERN.match(args.stage):
        print(f"migrate: STAGE={args.stage!r} is not a stage name, e.g. dev", file=sys.stderr)
        return 2
    tables = None if args.respecs_tables is None else parse_tables(args.respecs_tables)
    try:
        url = admin_url(args.stage, ssm=aws.client("ssm"), read_secret=read_database_secret)
        passwords = service_passwords(args.stage, _read_secret_if_any(aws.client("secretsmanager")))
        done = migrate_stage(
            url,
            respecs_tables=tables,
            service_passwords=passwords,
        )
    except (StageMigrationError, MigrationError, GrantsError, SettingsError) as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 2
    except (psycopg2.Error, BotoCoreError) as exc:
        print(f"migrate failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"migrations applied now: {', '.join(done.applied) or 'none'}; "
        f"service logins set: {', '.join(done.logins_set) or 'none'}; "
        f"without login (using the core's secret): {', '.join(done.without_login) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
