"""The operator's configuration: from the environment, or from the `local.env` a running
`sourceflow up` wrote; the same commands then work against the embedded stack and AWS."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.resources import Names
from shared.errors import SourceflowError

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
)


class OperatorError(SourceflowError):
    """Something the operator can fix; its message says what and how."""


@dataclass(frozen=True)
class OperatorConfig:
    values: Mapping[str, str]
    origin: str  # where the values came from, for error messages

    @classmethod
    def load(cls, state_dir: Path, environ: Mapping[str, str]) -> OperatorConfig:
        """`local.env` of a running local stack, overridden by the environment."""
        from ops.config import read_env_file

        env_file = state_dir / "local.env"
        values = read_env_file(env_file) if env_file.exists() else {}
        values.update({key: environ[key] for key in CONFIG_KEYS if environ.get(key)})
        origin = f"{env_file} and the environment" if env_file.exists() else "the environment"
        return cls(values, origin)

    def require(self, key: str) -> str:
        value = self.values.get(key)
        if not value:
            raise OperatorError(
                f"{key} is not set (looked in {self.origin}); start the local stack with "
                f"`sourceflow up`, or export {key} for the deployment you want to reach"
            )
        return value

    @property
    def stage(self) -> str:
        return self.values.get("SOURCEFLOW_STAGE") or "local"

    @property
    def names(self) -> Names:
        return Names(self.stage)

    def client(self, service_name: str) -> Any:
        import boto3

        options = {
            "region_name": self.values.get("AWS_DEFAULT_REGION") or None,
            "endpoint_url": self.values.get("AWS_ENDPOINT_URL") or None,
        }
        if self.values.get("AWS_ACCESS_KEY_ID"):
            options["aws_access_key_id"] = self.values["AWS_ACCESS_KEY_ID"]
            options["aws_secret_access_key"] = self.values.get("AWS_SECRET_ACCESS_KEY")
        return boto3.client(service_name, **options)


def read_env_file(path: Path) -> dict[str, str]:
    """The KEY=value lines a running stack wrote."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def unknown_source(source_id: str) -> OperatorError:
    return OperatorError(
        f"unknown source {source_id!r}; `sourceflow sources list` shows the sources"
    )
