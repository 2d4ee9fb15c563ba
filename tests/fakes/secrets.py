"""Secrets Manager, the port behind shared.runtime.secrets.Secrets, and the access a connector
is given (shared.connectors.SourceAccess) over it."""

from __future__ import annotations

from typing import Any

from shared.connectors import SourceAccess
from shared.connectors.endpoints import HostRule
from shared.runtime.secrets import SecretBinding, Secrets
from tests.fakes.aws import client_error

# The tests' stage's connection secrets prefix: a source may use the secrets under
# <prefix><source_id>/.
SECRETS_PREFIX = "sourceflow/test/sources/"


def source_secret(source_id: str, name: str) -> str:
    """The name of the source's own secret `name`."""
    return SecretBinding(SECRETS_PREFIX).secret_for(source_id, name)


def secret_arn(name: str) -> str:
    """The full ARN Secrets Manager gives the secret `name` (with its random suffix)."""
    return f"arn:aws:secretsmanager:eu-west-1:123456789012:secret:{name}-AbCdEf"


class FakeSecretsManager:
    """GetSecretValue over a dict of SecretStrings; counts the calls. A value that is an
    exception is raised instead. A secret is answered with its name and full ARN, as Secrets
    Manager does (`arns` names the ARN of a secret read by another spelling)."""

    def __init__(
        self, values: dict[str, str | Exception] | None = None, arns: dict[str, str] | None = None
    ) -> None:
        self.values: dict[str, str | Exception] = dict(values or {})
        self.arns = dict(arns or {})
        self.calls: list[str] = []

    def get_secret_value(self, SecretId: str) -> dict[str, Any]:
        self.calls.append(SecretId)
        value = self.values.get(SecretId)
        if value is None:
            raise client_error("ResourceNotFoundException", "GetSecretValue")
        if isinstance(value, Exception):
            raise value
        arn = self.arns.get(SecretId, secret_arn(SecretId))
        return {"Name": SecretId, "ARN": arn, "SecretString": value}


def fake_access(
    secrets_manager: FakeSecretsManager | None = None,
    *,
    allow_loopback: bool = False,
    reserved: frozenset[str] = frozenset(),
) -> SourceAccess:
    """What a connector reaches its source with, over a fake Secrets Manager: the cloud's host
    rule unless `allow_loopback` (the embedded stack's)."""
    binding = SecretBinding(SECRETS_PREFIX, reserved)
    return SourceAccess(
        Secrets(secrets_manager or FakeSecretsManager(), binding), HostRule(allow_loopback)
    )
