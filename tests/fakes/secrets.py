"""Secrets Manager, the port behind shared.runtime.secrets.Secrets."""

from __future__ import annotations

from typing import Any

from tests.fakes.aws import client_error


class FakeSecretsManager:
    """GetSecretValue over a dict of SecretStrings; counts the calls. A value that is an
    exception is raised instead."""

    def __init__(self, values: dict[str, str | Exception] | None = None) -> None:
        self.values: dict[str, str | Exception] = dict(values or {})
        self.calls: list[str] = []

    def get_secret_value(self, SecretId: str) -> dict[str, Any]:
        self.calls.append(SecretId)
        value = self.values.get(SecretId)
        if value is None:
            raise client_error("ResourceNotFoundException", "GetSecretValue")
        if isinstance(value, Exception):
            raise value
        return {"Name": SecretId, "SecretString": value}
