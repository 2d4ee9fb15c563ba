"""How long an e2e test waits for the stack, in one place (STYLE.md habit 16).

Every wait polls for a state the stack reaches by itself — a run over, a lock taken, an event
delivered, a queue drained, a command answered — and gives up only after WAIT_SECONDS. A quiet
machine needs a few seconds for most of them; a fully loaded one (load average 12 on two CPUs)
many times that. The bound is generous because a wait that polls costs nothing when all is
well: it fails a test only when the state never comes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

WAIT_SECONDS = 120.0
# An execution ends by itself, but may first wait out one of the stack's timeouts that a test
# watches run out (the approval's is WAIT_SECONDS, tests/e2e/harness/stack.py): a test waits for
# an execution to end twice the bound.
RUN_SECONDS = 2 * WAIT_SECONDS
POLL_SECONDS = 0.2
T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], what: str, timeout: float = WAIT_SECONDS) -> T:
    """Poll `condition` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_SECONDS)
    return value
