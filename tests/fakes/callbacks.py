"""Step Functions' task callbacks, the port every task reports its outcome through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.runtime.tasks import TaskCallbacks


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
