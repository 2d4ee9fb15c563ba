"""A connector's pacing (shared.connectors.pacing) that waits for no one: it notes each wait and
each vendor slot taken and given back, in order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.connectors.pacing import Pacing
from shared.rules.throttling import ThrottlePolicy

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@dataclass
class FakePacing:
    """`events`: ("wait", seconds), ("slot", host) when a slot is taken, ("free", host) when it
    is given back. The jitter's draw is `draw`; the clock reads `now`."""

    max_wait_seconds: float = 120.0
    draw: float = 0.0
    now: datetime = NOW
    events: list[tuple[str, float | str]] = field(default_factory=list)

    @property
    def waits(self) -> list[float]:
        return [float(seconds) for kind, seconds in self.events if kind == "wait"]

    def pacing(self) -> Pacing:
        return Pacing(
            throttle=ThrottlePolicy(self.max_wait_seconds),
            wait=lambda seconds: self.events.append(("wait", seconds)),
            slot=self._slot,
            random=lambda: self.draw,
            now=lambda: self.now,
        )

    @contextmanager
    def _slot(self, host: str) -> Iterator[None]:
        self.events.append(("slot", host))
        try:
            yield
        finally:
            self.events.append(("free", host))
