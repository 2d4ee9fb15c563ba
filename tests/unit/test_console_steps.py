"""What an execution did in each state, from its history (the console's run page colours each
state of the drawing by it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from console.steps import CANCELLED, FAILED, IN_PROGRESS, NOT_REACHED, SUCCEEDED, step_statuses

DEFINITION = {
    "StartAt": "Validate",
    "States": {
        name: {"Type": "Task"}
        for name in ("Validate", "Approve", "Download", "More", "Unlock", "Succeeded", "RunFailed")
    },
}


def history(*steps: tuple[str, str | None]) -> list[dict[str, Any]]:
    """Events: ("Validate", None) enters Validate; ("Validate", "exit") leaves it;
    ("fail", "Error") fails the task in progress; ("end", TYPE) ends the execution."""
    events: list[dict[str, Any]] = []
    for name, what in steps:
        event: dict[str, Any] = {"id": len(events) + 1, "timestamp": datetime.now(UTC)}
        if name == "fail":
            event |= {"type": "TaskFailed", "taskFailedEventDetails": {"error": what}}
        elif name == "end":
            event |= {"type": what}
        elif what == "exit":
            event |= {"type": "TaskStateExited", "stateExitedEventDetails": {"name": name}}
        else:
            event |= {"type": "TaskStateEntered", "stateEnteredEventDetails": {"name": name}}
        events.append(event)
    return events


def test_a_run_waiting_for_approval() -> None:
    events = history(("Validate", None), ("Validate", "exit"), ("Approve", None))
    statuses = step_statuses(DEFINITION, events)
    assert (statuses["Validate"], statuses["Approve"]) == (SUCCEEDED, IN_PROGRESS)
    assert statuses["Download"] == NOT_REACHED


def test_a_failed_task_and_the_fail_state_it_ends_in() -> None:
    events = history(
        ("Validate", None),
        ("fail", "InvalidFlowParams"),
        ("Validate", "exit"),
        ("RunFailed", None),
        ("end", "ExecutionFailed"),
    )
    statuses = step_statuses(DEFINITION, events)
    assert (statuses["Validate"], statuses["RunFailed"]) == (FAILED, FAILED)


def test_a_cancelled_step_and_an_aborted_execution() -> None:
    cancelled = history(("Download", None), ("fail", "RunCancelled"), ("Download", "exit"))
    assert step_statuses(DEFINITION, cancelled)["Download"] == CANCELLED
    aborted = history(("Approve", None), ("end", "ExecutionAborted"))
    assert step_statuses(DEFINITION, aborted)["Approve"] == CANCELLED


def test_a_state_visited_twice_shows_its_last_visit() -> None:
    # Given a download that failed once (caught, looped) and then went on
    events = history(
        ("Download", None),
        ("fail", "Throttled"),
        ("Download", "exit"),
        ("More", None),
        ("More", "exit"),
        ("Download", None),
    )
    assert step_statuses(DEFINITION, events)["Download"] == IN_PROGRESS
    # and the events are read in their order, whatever order they came in
    assert step_statuses(DEFINITION, reversed(events))["Download"] == IN_PROGRESS
