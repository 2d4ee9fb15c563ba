"""When `sourceflow up` starts a dead worker again, and what it says about it.

Lambda replaces a function's container that died; the embedded stack's supervisor does the same
for a worker process, after a delay that doubles with each death in a row (so that a worker
that cannot start does not spin), back to the first delay once a worker has lived long enough.
Each death is logged as a JSON line in the worker's own log, as Lambda's runtime reports a
crash in the function's log group, and printed by `up`.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.timefmt import isoformat


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_seconds: float = 1.0
    max_delay_seconds: float = 30.0
    # A worker that lived this long died of something new: its next restart is quick again.
    healthy_after_seconds: float = 60.0

    def delay(self, deaths_in_a_row: int) -> float:
        """The wait before a worker's restart after its `deaths_in_a_row`-th death (1, 2, …)."""
        return float(
            min(self.first_delay_seconds * 2 ** (deaths_in_a_row - 1), self.max_delay_seconds)
        )


@dataclass(frozen=True)
class Death:
    """A worker that died, and when it starts again."""

    worker: str
    status: int  # the process's exit status; -N when signal N killed it
    lived_seconds: float
    deaths_in_a_row: int
    restart_in_seconds: float

    @property
    def cause(self) -> str:
        if self.status < 0:
            with_signal = signal.Signals(-self.status).name
            return f"was killed by {with_signal}"
        return f"exited with status {self.status}"

    def text(self) -> str:
        return (
            f"worker {self.worker} {self.cause} after {self.lived_seconds:.0f}s; starting it "
            f"again in {self.restart_in_seconds:g}s (death {self.deaths_in_a_row} in a row)"
        )

    def log_line(self, service: str, now: datetime | None = None) -> str:
        """The death as a JSON log line of the worker's service, as the `logs` command reads."""
        return json.dumps(
            {
                "level": "ERROR",
                "message": self.text(),
                "timestamp": isoformat(now or datetime.now(UTC)),
                "service": f"sourceflow-{service}",
                "worker": self.worker,
                "exit_status": self.status,
                "restart_in_seconds": self.restart_in_seconds,
            }
        )


@dataclass
class Restarts:
    """The deaths in a row of each worker, and when each dead one is due to start again."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    _in_a_row: dict[str, int] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)

    def died(self, worker: str, *, status: int, lived_seconds: float, now: float) -> Death:
        """Record a death seen at `now` (a monotonic clock) and schedule the restart."""
        healthy = lived_seconds >= self.policy.healthy_after_seconds
        in_a_row = 1 if healthy else self._in_a_row.get(worker, 0) + 1
        self._in_a_row[worker] = in_a_row
        delay = self.policy.delay(in_a_row)
        self._due[worker] = now + delay
        return Death(worker, status, lived_seconds, in_a_row, delay)

    def waiting(self, worker: str) -> bool:
        return worker in self._due

    def due(self, now: float) -> list[str]:
        """The dead workers whose restart is due at `now`, no longer waiting from then on."""
        ready = sorted(worker for worker, at in self._due.items() if at <= now)
        for worker in ready:
            del self._due[worker]
        return ready

    def forget(self, worker: str) -> None:
        """The worker was stopped on purpose: no restart is due."""
        self._due.pop(worker, None)
