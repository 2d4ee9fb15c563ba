"""Fakes of AWS ports that tests of more than one tier need."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError


def client_error(code: str, operation: str) -> ClientError:
    """What botocore raises when an AWS API answers with error `code`."""
    return ClientError({"Error": {"Code": code, "Message": f"{code} (fake)"}}, operation)


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
