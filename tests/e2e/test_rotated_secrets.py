"""A secret rotated while the workers run, on the embedded stack: a service reading its database
login from its secret in the emulator's Secrets Manager (as in the cloud) has the login changed
in PostgreSQL and in the secret, and its sessions ended; the next run succeeds, the workers
never restarted (shared/rules/rotation.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from psycopg2.extensions import make_dsn, parse_dsn

from infra.migrate_stage import service_secret_name
from local.pg import transaction
from local.roles import rotate_password
from local.stack import aws_client
from shared.store.privileges import service_role
from tests.e2e.harness import Harness

DAY = timedelta(days=1)
SERVICE = "download"


def login_secret(admin_url: str, role: str, password: str) -> str:
    """The secret's text, as RDS keeps a login: the embedded server's address, the role's."""
    server = parse_dsn(admin_url)
    login = {"host": server["host"], "dbname": server.get("dbname", "postgres")}
    if "port" in server:
        login["port"] = server["port"]
    return json.dumps({**login, "username": role, "password": password})


@contextmanager
def login_from_its_secret(harness: Harness, service: str) -> Iterator[str]:
    """The service's workers redeployed to read their login from a secret of their own; yields
    the secret's ARN. On leaving, redeployed with DATABASE_URL again, whatever password the
    secret holds by then."""
    admin_url, role = harness.stack.env["DATABASE_URL"], service_role(service)
    secretsmanager = aws_client(harness.stack.env, "secretsmanager")
    password = rotate_password(admin_url, role)
    name = f"{service_secret_name(harness.stack.options.stage, service)}-{uuid.uuid4().hex[:8]}"
    arn = secretsmanager.create_secret(
        Name=name, SecretString=login_secret(admin_url, role, password)
    )["ARN"]
    harness.stack.redeploy(service, {"DATABASE_URL": "", "DATABASE_SECRET_ARN": arn})
    try:
        yield arn
    finally:
        now = json.loads(secretsmanager.get_secret_value(SecretId=arn)["SecretString"])
        url = make_dsn(admin_url, user=role, password=now["password"])
        harness.stack.redeploy(service, {"DATABASE_URL": url, "DATABASE_SECRET_ARN": ""})


def test_a_rotated_database_login_is_read_again_and_the_next_run_succeeds(
    harness: Harness,
) -> None:
    with login_from_its_secret(harness, SERVICE) as arn:
        # Given download's workers, warm, connected with the login their secret held
        now = datetime.now(UTC)
        first_source = harness.new_source(harness.new_dataset([DAY / 2], now=now), runtime_count=2)
        assert harness.run(first_source).status == "SUCCEEDED"

        # When the login is rotated, in PostgreSQL and in the secret, and the sessions the
        # workers hold end (as a database restart or an idle timeout ends them)
        admin_url, role = harness.stack.env["DATABASE_URL"], service_role(SERVICE)
        password = rotate_password(admin_url, role)
        aws_client(harness.stack.env, "secretsmanager").put_secret_value(
            SecretId=arn, SecretString=login_secret(admin_url, role, password)
        )
        with transaction(admin_url) as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )

        # Then the next run succeeds: the workers read the login again, without a restart
        source_id = harness.new_source(harness.new_dataset([DAY / 2] * 3, now=now), runtime_count=2)
        result = harness.run(source_id)
        assert result.status == "SUCCEEDED", result
        assert result.run["records"] == 3
        with transaction(admin_url) as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,))
            assert cur.fetchone()[0] >= 1  # connected again, as the rotated login
