"""What an execution did in each state of its definition, from its history.

The one place the console derives it: `sourceflow runs show` gets the same derivation
(ops/run_view.py, branch h-runshow); once that is on main this becomes a call to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
IN_PROGRESS = "in progress"
NOT_REACHED = "not reached"
STATUSES = (SUCCEEDED, FAILED, CANCELLED, IN_PROGRESS, NOT_REACHED)

# History events that say the state in progress failed.
_STEP_FAILURES = {"TaskFailed", "TaskTimedOut", "TaskStartFailed", "TaskSubmitFailed"}
# How an execution ends, and what that makes of the state it ends in.
_EXECUTION_ENDS = {
    "ExecutionSucceeded": SUCCEEDED,
    "ExecutionFailed": FAILED,
    "ExecutionTimedOut": FAILED,
    "ExecutionAborted": CANCELLED,
}
# The error a cancelled step reports (shared/errors.py RunCancelled).
_CANCELLED_ERROR = "RunCancelled"


def step_statuses(
    definition: Mapping[str, Any], events: Iterable[Mapping[str, Any]]
) -> dict[str, str]:
    """Each state of the definition: how its last visit went (succeeded; failed, or cancelled
    when the failure was an operator's cancel; in progress while the execution is in it), or
    not reached."""
    statuses = dict.fromkeys(definition["States"], NOT_REACHED)
    current: str | None = None
    error: str | None = None

    def leave(status: str | None = None) -> None:
        nonlocal current
        if current is not None:
            ended = status or (FAILED if error else SUCCEEDED)
            statuses[current] = CANCELLED if error == _CANCELLED_ERROR else ended
        current = None

    for event in sorted(events, key=lambda e: int(e["id"])):
        kind = event["type"]
        if kind.endswith("StateEntered"):
            leave()
            current, error = event["stateEnteredEventDetails"]["name"], None
            statuses[current] = IN_PROGRESS
        elif kind.endswith("StateExited"):
            leave()
        elif kind in _STEP_FAILURES and current is not None:
            error = _event_error(event) or kind
        elif kind in _EXECUTION_ENDS:
            leave(_EXECUTION_ENDS[kind] if not error else None)
    return statuses


def _event_error(event: Mapping[str, Any]) -> str | None:
    for key, value in event.items():
        if key.endswith("EventDetails") and isinstance(value, Mapping):
            return value.get("error")
    return None
