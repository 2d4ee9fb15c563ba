"""Fakes of AWS ports that tests of more than one tier need."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from shared.runtime.tasks import TaskCallbacks


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


class FakeCallbacks(TaskCallbacks):
    """Records SendTaskSuccess / SendTaskFailure / SendTaskHeartbeat instead of sending them.

    `over` plays a task Step Functions already ended: succeed and fail raise it. With
    `heartbeats=False` a heartbeat fails the test (nobody heartbeats an approval).
    """

    def __init__(self, *, over: Exception | None = None, heartbeats: bool = True) -> None:
        self.succeeded: list[tuple[str, Mapping[str, Any]]] = []
        self.failed: list[tuple[str, str, str]] = []
        self.heartbeats: list[str] = []
        self._over = over
        self._heartbeats_allowed = heartbeats

    def succeed(self, token: str, output: Mapping[str, Any]) -> None:
        if self._over is not None:
            raise self._over
        self.succeeded.append((token, output))

    def fail(self, token: str, error: str, cause: str) -> None:
        if self._over is not None:
            raise self._over
        self.failed.append((token, error, cause))

    def heartbeat(self, token: str) -> None:
        if not self._heartbeats_allowed:
            raise AssertionError(f"heartbeat for {token}: nothing should send one here")
        self.heartbeats.append(token)

    @property
    def calls(self) -> int:
        return len(self.succeeded) + len(self.failed) + len(self.heartbeats)
