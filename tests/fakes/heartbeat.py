"""Download's heartbeat ports: the task it beats for, the lease it renews, the clock it reads."""

from __future__ import annotations

from collections.abc import Callable

from services.download.domain import Heartbeat
from shared.errors import TaskOver


class FakeClock:
    """A monotonic clock that moves only when the test advances it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTask:
    """Counts heartbeats and lease renewals; can play an ended task or a lost lock."""

    def __init__(self, *, over: bool = False, holds_lock: bool = True) -> None:
        self.over, self.holds_lock = over, holds_lock
        self.beats = 0
        self.renewals = 0

    def send(self) -> None:
        if self.over:
            raise TaskOver("the task is over (TaskTimedOut)")
        self.beats += 1

    def renew_lease(self) -> bool:
        self.renewals += 1
        return self.holds_lock


def quiet_heartbeat(*, renew_lease: Callable[[], bool] = lambda: True) -> Heartbeat:
    """A heartbeat that beats only when download asks it to directly (an hour-long interval)."""
    return Heartbeat(send=lambda: None, renew_lease=renew_lease, interval_seconds=3600)
