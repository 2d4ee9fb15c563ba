"""Backfill slices as the scheduler starts them, one a tick."""

from __future__ import annotations

from typing import Any

from tests.e2e.harness import Harness, RunResult, wait_for


def backfill_executions(harness: Harness, source_id: str) -> list[dict[str, Any]]:
    """The executions the scheduler started for the source's backfill slices, oldest first."""
    executions = [e for e in harness.executions_of(source_id) if "-bf" in e["name"]]
    return sorted(executions, key=lambda e: e["startDate"])


def next_slice(harness: Harness, source_id: str) -> RunResult:
    """Tick, and follow the slice execution the tick started to its end."""
    started = len(backfill_executions(harness, source_id))
    harness.tick()

    def one_more() -> list[dict[str, Any]] | None:
        executions = backfill_executions(harness, source_id)
        return executions if len(executions) > started else None

    executions = wait_for(one_more, f"a slice execution of {source_id}")
    assert len(executions) == started + 1, executions
    return harness.finish(executions[-1]["executionArn"], source_id)
