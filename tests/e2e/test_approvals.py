"""The approval gate: a Re-specs query nobody approved for its source waits in Approve until a
second person approves or rejects it, or the wait times out; an approved query is remembered."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.stack import LocalStack
from shared.runtime import contracts
from shared.store.approvals import query_hash
from tests.e2e.harness import APPROVAL_SECONDS, WAIT_SECONDS, Harness, RunResult, wait_for
from tests.e2e.harness.approvals import SQM, respecs_source, waiting_for_approval

DAY = timedelta(days=1)


@pytest.fixture(scope="module", autouse=True)
def approval_gate(stack: LocalStack) -> Iterator[None]:
    """The validation service deployed with the gate on, for this module only."""
    stack.redeploy("validation", {"RESPECS_APPROVAL_REQUIRED": "true"})
    yield
    stack.redeploy("validation", {"RESPECS_APPROVAL_REQUIRED": "false"})


def approval_requested_event(harness: Harness, execution_arn: str) -> dict[str, Any]:
    events = harness.notifications(
        lambda e: (
            e["detail"].get("execution_arn") if e["detail-type"] == "Approval Requested" else None
        ),
        {execution_arn},
    )
    assert execution_arn in events, "no Approval Requested event"
    detail: dict[str, Any] = events[execution_arn]["detail"]
    return detail


def assert_untouched(result: RunResult, cursor: datetime, harness: Harness) -> None:
    """Failed before Download: unlocked, cursor where it was, nothing downloaded or updated."""
    source = result.source
    assert source is not None
    assert (source["locked_by"], source["last_modified_date"]) == (None, cursor)
    assert result.run["records"] is None
    name = result.execution_arn.rsplit(":", 1)[1]
    assert harness.raw_objects(f"{source['source_id']}/{name}/") == {}
    assert set(harness.attributes(source["source_id"]).values()) == {"sqft"}


def test_a_new_query_waits_until_a_second_person_approves_it(harness: Harness) -> None:
    # Given a source whose Re-specs query was set by hand and never approved
    source_id, cursor, query = respecs_source(harness, SQM)

    # When it runs
    arn = harness.start(source_id)
    waiting = waiting_for_approval(harness, arn)

    # Then it waits in Approve, listed with who asked, holding the lock, nothing downloaded
    assert (waiting["source_id"], waiting["query"]) == (source_id, query)
    # (by the login that edited the params: here the stack's administrator)
    assert waiting["requested_by"] == harness.admin_login()
    assert harness.run_source_row(source_id)["locked_by"] == arn
    assert harness.run_row(arn)["progress_records"] is None  # type: ignore[index]
    assert "Download" not in harness.task_messages(arn)
    # and people were told, in an event that keeps its contract
    event = approval_requested_event(harness, arn)
    contracts.validate(event, "approval-requested")
    assert (event["query"], event["query_hash"]) == (query, query_hash(query))

    # When a second person approves it
    approved = harness.sourceflow("approve", arn.rsplit(":", 1)[1], person="bob")
    assert approved.returncode == 0, approved.stderr
    result = harness.finish(arn, source_id)

    # Then the run went on: downloaded, query applied, cursor moved, lock released
    assert result.status == "SUCCEEDED", result
    assert (result.run["status"], result.run["respecs_rows"]) == ("succeeded", 2)
    assert set(harness.attributes(source_id).values()) == {"sqm"}
    assert result.source["locked_by"] is None  # type: ignore[index]
    assert result.source["last_modified_date"] > cursor  # type: ignore[index]
    # and the state machine got bob's approval as the Approve step's result
    assert result.output is not None
    approval = result.output["approval"]
    contracts.validate(approval, "approval-result")
    assert (approval["approved_by"], approval["remembered"]) == ("bob", False)

    # When the same query (written differently) runs again for the source
    harness.set_params(source_id, {"type": "Re-specs", "sql": f"  {query.lower()}  -- again"})
    again = harness.run(source_id)

    # Then it does not ask twice: no Approve task, straight to Download
    assert again.status == "SUCCEEDED", again
    assert "Approve" not in harness.task_messages(again.execution_arn)
    assert again.run["respecs_rows"] == 2


def test_the_person_who_asked_cannot_approve_and_a_changed_query_asks_again(
    harness: Harness,
) -> None:
    # Given a query alice set with `sourceflow flow set`, approved by bob and run once
    cursor = datetime.now(UTC) - 2 * DAY
    source_id = harness.new_source(harness.new_dataset([DAY]), cursor=cursor, runtime_count=3)
    harness.seed_attributes(source_id, 1)
    query = SQM.format(source=source_id)
    set_by_alice = harness.sourceflow(
        "flow", "set", source_id, "respecs", "--sql", query, person="alice"
    )
    assert set_by_alice.returncode == 0, set_by_alice.stderr
    arn = harness.start(source_id)
    name = arn.rsplit(":", 1)[1]
    assert waiting_for_approval(harness, arn)["requested_by"] == "alice"

    # When alice approves her own query, from a shell that says she is bob (the bypass:
    # `USER=bob sourceflow approve RUN` was recorded as bob)
    own = harness.sourceflow(
        "approve", name, person="alice", environment={"USER": "bob", "LOGNAME": "bob"}
    )

    # Then she is told a second person must, and the run still waits
    assert own.returncode == 1
    assert "alice asked for this Re-specs query" in own.stderr
    assert "second person" in own.stderr
    assert waiting_for_approval(harness, arn)["execution_name"] == name
    assert harness.sourceflow("approve", name, person="bob").returncode == 0
    assert harness.finish(arn, source_id).status == "SUCCEEDED"

    # When the query changes by one constant
    harness.set_params(source_id, {"type": "Re-specs", "sql": query.replace("'sqm'", "'m2'")})
    changed = harness.start(source_id)

    # Then it asks again (an approval covers one exact query), and a cancel ends the wait
    waiting_for_approval(harness, changed)
    cancelled = harness.sourceflow("cancel", changed.rsplit(":", 1)[1], "--reason", "not today")
    assert cancelled.returncode == 0, cancelled.stderr
    started = time.monotonic()
    result = harness.finish(changed, source_id)
    assert time.monotonic() - started < APPROVAL_SECONDS / 2, "the cancel waited for the timeout"
    assert (result.status, result.error) == ("FAILED", "RunCancelled")
    assert (result.run["status"], result.run["failed_step"]) == ("cancelled", "Approve")
    assert result.run["cancel_reason"] == "not today"
    assert_untouched_after_success(result, harness)
    event = harness.notifications(
        lambda e: e["detail"].get("execution_arn") if e["detail-type"] == "Run Cancelled" else None,
        {changed},
    )[changed]
    assert event["detail"]["cancelled_step"] == "Approve"


def assert_untouched_after_success(result: RunResult, harness: Harness) -> None:
    """The cancelled run changed nothing the successful one before it left."""
    source = result.source
    assert source is not None and source["locked_by"] is None
    assert set(harness.attributes(source["source_id"]).values()) == {"sqm"}
    assert result.run["cursor_after"] is None


def test_a_rejected_query_fails_the_run_and_pages_nobody(harness: Harness) -> None:
    # Given a run waiting for approval
    source_id, cursor, _ = respecs_source(harness, SQM)
    arn = harness.start(source_id)
    waiting_for_approval(harness, arn)
    harness.alerts_about(source_id)  # nothing from before

    # When someone rejects it
    rejected = harness.sourceflow(
        "reject", arn.rsplit(":", 1)[1], "--reason", "sqm is the wrong unit", person="bob"
    )
    assert rejected.returncode == 0, rejected.stderr
    result = harness.finish(arn, source_id)

    # Then the run failed as ApprovalRejected, with who and why in the ledger, changing nothing
    assert (result.status, result.error) == ("FAILED", "ApprovalRejected")
    assert (result.run["status"], result.run["failed_step"]) == ("failed", "Approve")
    assert "rejected by bob: sqm is the wrong unit" in result.run["error_detail"]
    assert_untouched(result, cursor, harness)
    # the requester learns it from Run Failed; nobody is paged for a person's decision
    event = harness.outcome_events({arn})[arn]["detail"]
    contracts.validate(event, "run-failed")
    assert (event["failed_step"], event["failure"]["Error"]) == ("Approve", "ApprovalRejected")
    assert harness.alerts_about(source_id) == []
    # and a rejected query is not remembered: the next run asks again
    again = harness.start(source_id)
    waiting_for_approval(harness, again)
    assert (
        harness.sourceflow("reject", again.rsplit(":", 1)[1], "--reason", "still no").returncode
        == 0
    )
    assert harness.finish(again, source_id).error == "ApprovalRejected"


def test_an_unanswered_approval_times_out_and_unlocks(harness: Harness) -> None:
    # Given a run waiting for approval that nobody answers
    source_id, cursor, _ = respecs_source(harness, SQM)
    arn = harness.start(source_id)
    waiting_for_approval(harness, arn)

    # When the Approve task's timeout passes
    result = harness.finish(arn, source_id)

    # Then the run failed as ApprovalTimedOut, unlocked, cursor unchanged, people alerted
    assert (result.status, result.error) == ("FAILED", "ApprovalTimedOut")
    assert (result.run["status"], result.run["failed_step"]) == ("failed", "Approve")
    assert f"within {APPROVAL_SECONDS} seconds" in result.run["error_detail"]
    assert_untouched(result, cursor, harness)
    alerts = wait_for(lambda: harness.alerts_about(source_id), "the alert")
    assert any("ApprovalTimedOut" in line for line in alerts)
    # and it is no longer listed, nor can it be approved late
    listed = json.loads(harness.sourceflow("approvals", "--json").stdout)
    assert arn.rsplit(":", 1)[1] not in {row["execution_name"] for row in listed}
    late = harness.sourceflow("approve", arn.rsplit(":", 1)[1], person="bob")
    assert late.returncode == 1 and "no longer waits" in late.stderr


def test_run_wait_says_what_the_run_waits_for_and_approvals_lists_it(harness: Harness) -> None:
    # Given an operator following a Re-specs run with `sourceflow run --wait`
    source_id, _, _ = respecs_source(harness, SQM)
    state_dir = str(harness.stack.options.state_dir)
    following = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "run", source_id, "--wait", "--state-dir", state_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        [execution] = harness.wait_for_executions(source_id, 1)
        name = execution["name"]
        waiting_for_approval(harness, execution["executionArn"])

        # When another operator lists what waits, and approves it
        listed = harness.sourceflow("approvals")
        assert listed.returncode == 0, listed.stderr
        assert name in listed.stdout and source_id in listed.stdout
        assert harness.sourceflow("approve", name, person="bob").returncode == 0
        out, err = following.communicate(timeout=WAIT_SECONDS)
    finally:
        following.kill()

    # Then the follower was told what the run waited for and saw it succeed
    assert following.returncode == 0, out + err
    assert f"waiting for a second person: `sourceflow approve {name}`" in out
    assert "SUCCEEDED" in out
    assert set(harness.attributes(source_id).values()) == {"sqm"}
