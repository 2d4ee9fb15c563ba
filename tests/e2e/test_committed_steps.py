"""A step that committed is never reported as failed (issue 14).

A validation or unlocking worker killed right after its transaction commits, before it reports
with SendTaskSuccess (the worker's `after-commit` fault point, local/worker.py): the
message comes back after the queue's visibility timeout, while the task still waits, and its
redelivery reports what the first delivery committed. And when a task does end before the
redelivery comes, the failure path reads the ledger first: a run the ledger says succeeded
ends SUCCEEDED. Each run loads its records exactly once, ends unlocked with its cursor moved,
publishes Run Succeeded and no Run Failed, and pages nobody.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ops.runs import wait_for_execution
from tests.e2e.harness import RUN_SECONDS, WAIT_SECONDS, Harness, RunResult, wait_for
from tests.e2e.harness.faults import dies_once_after_commit

DAY = timedelta(days=1)
_THE_HAPPY_PATH = [
    "Validate",
    "RunOrSkip",
    "StartDownload",
    "Download",
    "MoreToDownload",
    "UnlockAfterSuccess",
    "PublishRunSucceeded",
    "Succeeded",
]


def _source_with_two_new_records(harness: Harness) -> tuple[str, str, datetime]:
    """A Normal source two days behind a dataset of two records modified since; returns the
    source, its dataset and its cursor."""
    now = datetime.now(UTC)
    dataset = harness.new_dataset([DAY, DAY / 2], now=now)
    cursor = (now - 2 * DAY).replace(microsecond=0)
    return harness.new_source(dataset, runtime_count=2, cursor=cursor), dataset, cursor


def _finish(harness: Harness, execution_arn: str, source_id: str) -> RunResult:
    """Wait for the execution to end, as long as its own task timeouts could make it last."""
    timeouts = harness.stack.options.timeouts
    bound = timeouts.validate_seconds + 2 * timeouts.unlock_seconds + WAIT_SECONDS
    wait_for_execution(harness.aws("stepfunctions"), execution_arn, timeout=bound)
    return harness.finish(execution_arn, source_id)


def _states_entered(harness: Harness, execution_arn: str) -> list[str]:
    pages = (
        harness.aws("stepfunctions")
        .get_paginator("get_execution_history")
        .paginate(executionArn=execution_arn)
    )
    return [
        event["stateEnteredEventDetails"]["name"]
        for page in pages
        for event in page["events"]
        if event["type"].endswith("StateEntered")
    ]


def _outcome_events(harness: Harness, execution_arn: str) -> list[str]:
    """The Run Succeeded / Run Failed events of the execution read until its Run Succeeded.
    Either is published before the execution ends, and never both (the definition's paths part
    before them), so the wait only covers their delivery to the queue."""
    seen: dict[str, str] = {}  # event id -> detail type

    def outcome(event: dict[str, Any]) -> str | None:
        if event["detail"].get("execution_arn") != execution_arn:
            return None
        seen[event["id"]] = str(event["detail-type"])
        return seen[event["id"]]

    harness.notifications(outcome, {"Run Succeeded"})
    return sorted(seen.values())


def _assert_succeeded_once(
    harness: Harness, result: RunResult, dataset: str, cursor: datetime, *, died: Path
) -> None:
    # The worker did die after its commit
    assert died.exists(), f"no {died.name}: the fault never fired"
    # The execution and its ledger row say succeeded
    assert result.status == "SUCCEEDED", result
    assert result.run["status"] == "succeeded", result.run
    # Both records landed, each once: 0 lost, 0 duplicated
    manifest, records = harness.raw_output(result)
    assert sorted(record["id"] for record in records) == [f"{dataset}-{i:05d}" for i in range(2)]
    assert (manifest["records"], result.run["records"]) == (2, 2)
    # The run was counted once, the source is unlocked, the cursor moved to the newest record
    newest = max(datetime.fromisoformat(record["last_modified"]) for record in records)
    assert result.source is not None
    assert result.source["runtime_count"] == 3
    assert result.source["locked_by"] is None
    assert (result.run["cursor_before"], result.run["cursor_after"]) == (cursor, newest)
    assert result.source["last_modified_date"] == newest > cursor
    # Run Succeeded, no Run Failed, and nobody paged
    assert _outcome_events(harness, result.execution_arn) == ["Run Succeeded"]
    assert harness.alerts_about(result.run["source_id"]) == []


@pytest.mark.parametrize("service", ["validation", "unlocking"])
def test_a_worker_killed_right_after_its_commit(
    harness: Harness, tmp_path: Path, service: str
) -> None:
    # Given a Normal source behind two new records
    source_id, dataset, cursor = _source_with_two_new_records(harness)

    # When the worker that commits the run's validation (its decision, lock and count) or its
    # unlock (cursor, lock and final status) dies before reporting it
    with dies_once_after_commit(harness.stack, service, tmp_path) as died:
        arn = harness.start(source_id)
        result = _finish(harness, arn, source_id)

    # Then the message's redelivery reported what was committed while the task still waited:
    # the run went on and succeeded once
    entered = _states_entered(harness, arn)
    assert entered == _THE_HAPPY_PATH, (result.status, result.run["status"], entered)
    _assert_succeeded_once(harness, result, dataset, cursor, died=died)


def test_an_unlock_that_committed_but_whose_task_ended_failed_ends_succeeded(
    harness: Harness, tmp_path: Path
) -> None:
    # Given a Normal source behind two new records
    source_id, dataset, cursor = _source_with_two_new_records(harness)

    # When the unlocking worker that commits the run's end dies before reporting it, no other
    # worker is there to take its message up, and the Unlock task times out meanwhile
    with dies_once_after_commit(harness.stack, "unlocking", tmp_path) as died:
        arn = harness.start(source_id)
        wait_for(died.exists, "the unlocking worker to die after its commit", RUN_SECONDS)
        harness.stack.kill_workers("unlocking")
        _, body = harness.task_messages(arn)["UnlockAfterSuccess"]
        # (a reported error may not be named States.*: this one stands in for States.Timeout)
        harness.aws("stepfunctions").send_task_failure(
            taskToken=body["task_token"],
            error="UnlockTimedOut",
            cause="the test ends the Unlock task as its timeout would",
        )
        harness.stack.start_workers("unlocking")
        result = _finish(harness, arn, source_id)

    # Then the failure path asked the ledger, which says succeeded: the run ends SUCCEEDED
    entered = _states_entered(harness, arn)
    assert entered[-4:] == [
        "UnlockAfterFailure",
        "SucceededOrFailed",
        "PublishRunSucceeded",
        "Succeeded",
    ], (result.status, result.run["status"], entered)
    assert not {"PublishRunFailed", "AlertPeople"} & set(entered), (result.status, entered)
    _assert_succeeded_once(harness, result, dataset, cursor, died=died)
