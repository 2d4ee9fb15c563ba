"""The operator's configuration: from the environment, or from the `local.env` a running
`sourceflow up` wrote; the same commands then work against the embedded stack and AWS."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.resources import Names
from shared.errors import SourceflowError, TransientError

if TYPE_CHECKING:
    from shared.store.db import Database

# Where the embedded stack's workers write their JSON log lines (`sourceflow logs` reads them
# there; without it, CloudWatch Logs).
LOGS_DIR_VARIABLE = "SOURCEFLOW_LOGS_DIR"
# What `local.env` or the environment must provide, and how to get it when it does not.
CONFIG_KEYS = (
    "DATABASE_URL",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "STATE_MACHINE_ARN",
    "EVENT_BUS_NAME",
    "SOURCEFLOW_STAGE",
    "RESPECS_ALLOWED_TABLES",
    # The SQL targets a workflow's sql tasks may name (`apply` checks them).
    "WORKFLOW_SQL_TARGETS",
    # How a workflow's versions become state machines (ops/workflows.py Layout).
    "WORKFLOW_MACHINES",
    "SOURCEFLOW_DB_IAM_AUTH",
    LOGS_DIR_VARIABLE,
    # What `sources add|edit` and `apply` check connections with, as the services do: where
    # each source's secrets live, and whether sources may reach loopback (the embedded stack).
    "CONNECTION_SECRETS_PREFIX",
    "ALLOW_LOOPBACK_SOURCES",
    # The raw bucket, where `runs show` says a run's manifest is (the cloud's name carries the
    # account and region: the core stack's raw-bucket-name parameter).
    "RAW_BUCKET",
)
# The file with a person's own login (DATABASE_URL=…): `sourceflow up` writes one per person in
# <state dir>/people/; in the cloud, a DATABASE_URL without a password and IAM authentication.
CREDENTIALS_VARIABLE = "SOURCEFLOW_CREDENTIALS"


class OperatorError(SourceflowError):
    """Something the operator can fix; its message says what and how."""


@dataclass(frozen=True)
class OperatorConfig:
    values: Mapping[str, str]
    origin: str  # where the values came from, for error messages

    @classmethod
    def load(cls, state_dir: Path, environ: Mapping[str, str]) -> OperatorConfig:
        """`local.env` of a running local stack, overridden by the environment, whose
        DATABASE_URL the person's credentials file (SOURCEFLOW_CREDENTIALS) overrides."""
        env_file = state_dir / "local.env"
        values = read_env_file(env_file) if env_file.exists() else {}
        values.update({key: environ[key] for key in CONFIG_KEYS if environ.get(key)})
        origin = f"{env_file} and the environment" if env_file.exists() else "the environment"
        credentials = environ.get(CREDENTIALS_VARIABLE)
        if credentials:
            values["DATABASE_URL"] = _login_from(Path(credentials))
            origin = f"{credentials}, {origin}"
        return cls(values, origin)

    def require(self, key: str) -> str:
        value = self.values.get(key)
        if not value:
            raise OperatorError(
                f"{key} is not set (looked in {self.origin}); start the local stack with "
                f"`sourceflow up`, or export {key} for the deployment you want to reach"
            )
        return value

    def database_url(self) -> str:
        """The person's DATABASE_URL; without a password and with SOURCEFLOW_DB_IAM_AUTH=true,
        completed with an IAM authentication token (RDS), so the login is the IAM principal's."""
        from psycopg2.extensions import make_dsn, parse_dsn

        url = self.require("DATABASE_URL")
        if self.values.get("SOURCEFLOW_DB_IAM_AUTH", "").lower() != "true":
            return url
        parts = parse_dsn(url)
        if parts.get("password") or not parts.get("host") or not parts.get("user"):
            raise OperatorError(
                "SOURCEFLOW_DB_IAM_AUTH=true needs a DATABASE_URL with your user and the host "
                "and no password, e.g. postgresql://alice@db.example:5432/sourceflow"
            )
        token = self.client("rds").generate_db_auth_token(
            DBHostname=parts["host"], Port=int(parts.get("port", 5432)), DBUsername=parts["user"]
        )
        return str(make_dsn(url, password=token, sslmode=parts.get("sslmode", "verify-full")))

    def region(self) -> str:
        """The AWS region: AWS_DEFAULT_REGION here, or what boto3 finds (AWS_REGION, the AWS
        config file)."""
        import boto3

        region = self.values.get("AWS_DEFAULT_REGION") or boto3.session.Session().region_name
        if not region:
            raise OperatorError(
                f"no AWS region (looked in {self.origin} and the AWS config); give --state-dir "
                "of a running `sourceflow up` (its local.env sets one), or export "
                "AWS_DEFAULT_REGION for the deployment you want to reach"
            )
        return str(region)

    @property
    def stage(self) -> str:
        return self.values.get("SOURCEFLOW_STAGE") or "local"

    @property
    def names(self) -> Names:
        return Names(self.stage)

    def client(self, service_name: str, *, config: Any = None) -> Any:
        """A boto3 client of the deployment; `config`, a botocore Config (timeouts, retries)."""
        import boto3

        options = {
            "region_name": self.region(),
            "endpoint_url": self.values.get("AWS_ENDPOINT_URL") or None,
            "config": config,
        }
        if self.values.get("AWS_ACCESS_KEY_ID"):
            options["aws_access_key_id"] = self.values["AWS_ACCESS_KEY_ID"]
            options["aws_secret_access_key"] = self.values.get("AWS_SECRET_ACCESS_KEY")
        return boto3.client(service_name, **options)


def _login_from(path: Path) -> str:
    try:
        login = read_env_file(path).get("DATABASE_URL")
    except OSError as exc:
        raise OperatorError(
            f"{CREDENTIALS_VARIABLE}={path}: cannot read it ({exc.strerror}); name your own "
            "credentials file (`sourceflow up` writes one per person under <state dir>/people/)"
        ) from None
    if not login:
        raise OperatorError(f"{CREDENTIALS_VARIABLE}={path} has no DATABASE_URL=… line")
    return login


# A name a POSIX shell takes for a variable.
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def write_env_file(path: Path, values: Mapping[str, str], *, mode: int = 0o600) -> None:
    """`KEY='value'` lines that a shell sources (`set -a; . local.env`) and `read_env_file`
    reads back as they were written; the file is created with `mode` before anything is in it."""
    for key in values:
        if not _VARIABLE_NAME.fullmatch(key):
            raise ValueError(f"{key!r} is not a shell variable name")
    path.unlink(missing_ok=True)
    path.touch(mode=mode)
    path.write_text("".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items()))


def read_env_file(path: Path) -> dict[str, str]:
    """The KEY=value assignments of a file `write_env_file` wrote (or one written by hand, in
    the shell's quoting); `#` starts a comment, as in the shell."""
    try:
        words = shlex.split(path.read_text(), comments=True)
    except ValueError as exc:  # an unterminated quote
        raise OperatorError(f"{path}: {exc}; quote each value as the shell would") from None
    return dict(word.split("=", 1) for word in words if "=" in word)


def unknown_source(source_id: str) -> OperatorError:
    return OperatorError(
        f"unknown source {source_id!r}; `sourceflow sources list` shows the sources"
    )


def reach_database(db: Database, config: OperatorConfig) -> None:
    """Connect now, so that a database down or a login refused is said once, naming where the
    DATABASE_URL came from, before the command does anything."""
    try:
        with db.transaction():
            pass
    except TransientError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise OperatorError(
            f"{reason}; is the database up, and DATABASE_URL (from {config.origin}) right? "
            "`sourceflow up` starts the local stack"
        ) from None
