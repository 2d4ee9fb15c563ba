"""The Re-specs approval gate against a real PostgreSQL: validation says whether a run waits,
the Approve step keeps the token (services.validation.approval), and a person answers it
(ops.approvals, ops.cancel_run). Step Functions and EventBridge are fakes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ops.approvals import ApprovalError, approve, list_waiting, reject
from ops.runs import cancel_run
from services.validation.approval import ApprovalRejected, RunNotWaiting, request_approval
from shared.errors import RunCancelled, TaskOver
from shared.runtime import contracts
from shared.store import approvals
from shared.store.db import Database
from shared.store.ledger import set_flow_params
from tests.builders import Execution
from tests.fakes import FakeCallbacks
from tests.integration.conftest import (
    CURSOR,
    LEASE,
    PEOPLE,
    MakeSource,
    NewExecution,
    expire_lease,
    lock_of,
    run_row,
    validate,
)

# Three people, each connected as their own login (conftest's `people`).
REQUESTER, APPROVER, CANCELLER = PEOPLE
People = dict[str, Database]
TIMEOUT = timedelta(hours=24)
# A fixed clock for the Approve step, so that the deadline it writes is known exactly.
NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)


def query_for(source_id: str, value: str = "sqm") -> str:
    return f"UPDATE public.listing_attributes SET value = '{value}' WHERE source_id = '{source_id}'"


# --- fakes and helpers -------------------------------------------------------------------------


def approval_callbacks(*, over: bool = False) -> FakeCallbacks:
    """Records SendTaskSuccess / SendTaskFailure; nobody heartbeats an approval; `over` plays a
    task Step Functions ended."""
    ended = TaskOver("the task is over (TaskTimedOut)") if over else None
    return FakeCallbacks(over=ended, heartbeats=False)


class Announcements:
    """The Approval Requested events put; fails the first `failures` times it is asked."""

    def __init__(self, failures: int = 0) -> None:
        self.details: list[Mapping[str, Any]] = []
        self.attempts = 0
        self._failures = failures

    def __call__(self, fields: Mapping[str, Any]) -> None:
        self.attempts += 1
        if self.attempts <= self._failures:
            raise RuntimeError("EventBridge is down")
        self.details.append(dict(fields))


def fixed_clock() -> datetime:
    return NOW


def approval_request(execution: Execution) -> dict[str, Any]:
    """The approval-request the Approve task sends, with its own token."""
    request = {
        **execution.validation(),
        "schema": "approval-request",
        "task_token": f"token-approval-request-{execution.name}",
    }
    contracts.validate(request, "approval-request")
    return request


def ask(
    db: Database, execution: Execution, announce: Announcements | None = None
) -> dict[str, Any] | None:
    """Deliver the Approve task's request to the validation service, as its handler does."""
    return request_approval(
        approval_request(execution),
        db=db,
        clock=fixed_clock,
        timeout=TIMEOUT,
        lease=LEASE,
        announce=announce if announce is not None else Announcements(),
    )


def respecs_source(
    people: People, make_source: MakeSource, *, requested_by: str = REQUESTER, value: str = "sqm"
) -> tuple[str, str]:
    """A source set to Re-specs by `requested_by`, connected as themselves (the flow history's
    newest entry); its id and query."""
    source_id = make_source(runtime_count=3, cursor=CURSOR)
    return source_id, set_query(people[requested_by], source_id, value)


def set_query(person: Database, source_id: str, value: str) -> str:
    query = query_for(source_id, value)
    with person.transaction() as cur:
        set_flow_params(cur, source_id, {"flow_type": "Re-specs", "sql": query}, reason="units")
    return query


def remember(db: Database, source_id: str, query: str, *, approved_in: str = "earlier") -> None:
    """An approval bob gave earlier, as the database holds it."""
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO public.respecs_approval"
            " (source_id, query_hash, query, approved_by, approved_in) VALUES (%s, %s, %s, %s, %s)",
            (source_id, approvals.query_hash(query), query, APPROVER, approved_in),
        )


def run_approval(db: Database, execution: Execution) -> dict[str, Any] | None:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM public.run_approval WHERE execution_arn = %s", (execution.arn,))
        row = cur.fetchone()
    return dict(row) if row else None


def remembered_approvals(db: Database, source_id: str) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute("SELECT * FROM public.respecs_approval WHERE source_id = %s", (source_id,))
        return [dict(row) for row in cur.fetchall()]


def waiting_run(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> tuple[Execution, str]:
    """Given: a Re-specs run asked for by alice, validated with the gate on and waiting in
    Approve with its token kept; the execution and its query."""
    source_id, query = respecs_source(people, make_source)
    execution = new_execution(source_id)
    validated = validate(db, execution, approval_gate=True)
    assert validated["approval_required"] is True, validated
    assert ask(db, execution) is None
    approval = run_approval(db, execution)
    assert approval is not None and approval["status"] == "waiting", approval
    return execution, query


def ledger_failure(db: Database, execution: Execution) -> tuple[Any, Any, Any]:
    run = run_row(db, execution.arn)
    assert run is not None
    return run["failed_step"], run["error"], run["error_detail"]


# --- validation says whether a run waits -------------------------------------------------------


def test_with_the_gate_on_a_respecs_run_requires_approval(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a Re-specs source whose query nobody approved
    source_id, _ = respecs_source(people, make_source)
    # When a run is validated with the gate on
    validated = validate(db, new_execution(source_id), approval_gate=True)
    # Then it runs, but waits for approval first
    assert validated["decision"] == "run"
    assert validated["plan"]["flow_type"] == "respecs"
    assert validated["approval_required"] is True
    contracts.message("validation-result", correlation_id="c", **validated)


def test_with_the_gate_off_a_respecs_run_does_not_wait(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a Re-specs source whose query nobody approved, in a deployment without the gate
    source_id, _ = respecs_source(people, make_source)
    # When a run is validated
    validated = validate(db, new_execution(source_id), approval_gate=False)
    # Then it runs without waiting
    assert validated["decision"] == "run"
    assert validated["approval_required"] is False


def test_a_normal_run_does_not_wait_for_approval(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a Normal source
    source_id = make_source(runtime_count=3, cursor=CURSOR)
    # When a run is validated with the gate on
    validated = validate(db, new_execution(source_id), approval_gate=True)
    # Then it runs without waiting
    assert validated["decision"] == "run"
    assert validated["plan"]["flow_type"] == "normal"
    assert validated["approval_required"] is False


def test_a_remembered_approval_of_the_query_for_the_source_lets_the_next_run_go(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a Re-specs run that waits for approval
    source_id, query = respecs_source(people, make_source)
    first = new_execution(source_id)
    assert validate(db, first, approval_gate=True)["approval_required"] is True

    # When the query is approved for the source
    remember(db, source_id, query, approved_in=first.name)

    # Then a redelivery of the same validation no longer asks
    assert validate(db, first, approval_gate=True)["approval_required"] is False
    # And neither does the next run of the same query
    expire_lease(db, source_id)
    second = validate(db, new_execution(source_id), approval_gate=True)
    assert second["decision"] == "run"
    assert second["approval_required"] is False


def test_an_approval_remembered_for_another_source_does_not_count(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given two sources, and the very same query approved for the other one
    source_id, query = respecs_source(people, make_source)
    other = make_source(runtime_count=3, cursor=CURSOR)
    remember(db, other, query)
    assert len(remembered_approvals(db, other)) == 1

    # When a run of this source is validated with the gate on
    validated = validate(db, new_execution(source_id), approval_gate=True)

    # Then it still waits: an approval is per source
    assert validated["approval_required"] is True


@pytest.mark.parametrize("why", ["SourceInactive", "SourceLocked"])
def test_a_skip_carries_no_approval_required(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution, why: str
) -> None:
    # Given a Re-specs source that is inactive, or locked by another run
    source_id, _ = respecs_source(people, make_source)
    if why == "SourceInactive":
        with db.transaction() as cur:
            cur.execute(
                "UPDATE public.source SET is_active = false WHERE source_id = %s", (source_id,)
            )
    else:
        validate(db, new_execution(source_id), approval_gate=True)

    # When a run is validated with the gate on
    validated = validate(db, new_execution(source_id), approval_gate=True)

    # Then it is skipped, and the skip says nothing about approval (the contract forbids it)
    assert (validated["decision"], validated["reason"]) == ("skip", why)
    assert "approval_required" not in validated
    contracts.message("validation-result", correlation_id="c", **validated)


# --- the Approve step keeps the token ----------------------------------------------------------


def test_the_approve_step_keeps_the_token_holds_the_lock_and_announces_once(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a Re-specs query first written by carol, then rewritten by alice (the newest change)
    source_id, _ = respecs_source(people, make_source, requested_by=CANCELLER, value="ft")
    query = set_query(people[REQUESTER], source_id, "sqm")
    execution = new_execution(source_id)
    assert validate(db, execution, approval_gate=True)["approval_required"] is True
    announced = Announcements()

    # When the Approve task's request arrives
    answer = ask(db, execution, announced)

    # Then nothing is answered now: a person will
    assert answer is None
    # And the token is kept, waiting, asked for by the newest author, with the task's deadline
    approval = run_approval(db, execution)
    assert approval is not None
    assert approval["status"] == "waiting"
    assert approval["task_token"] == approval_request(execution)["task_token"]
    assert approval["source_id"] == source_id
    assert approval["query"] == query
    assert approval["query_hash"] == approvals.query_hash(query)
    assert approval["requested_by"] == REQUESTER
    assert approval["expires_at"] == NOW + TIMEOUT
    assert approval["decided_by"] is None and approval["decided_at"] is None
    assert approval["announced_at"] is not None
    # And the source stays locked by the run for at least the whole wait plus a lease
    locked_by, _, lock_expires_at = lock_of(db, source_id)
    assert locked_by == execution.arn
    assert lock_expires_at >= NOW + TIMEOUT + LEASE
    # And one Approval Requested event went out, valid under its contract
    [detail] = announced.details
    contracts.validate(
        contracts.message("approval-requested", correlation_id=execution.name, **detail),
        "approval-requested",
    )
    assert detail["execution_arn"] == execution.arn
    assert detail["execution_name"] == execution.name
    assert detail["source_id"] == source_id
    assert detail["query"] == query
    assert detail["query_hash"] == approvals.query_hash(query)
    assert detail["requested_by"] == REQUESTER


def test_a_redelivered_request_does_not_announce_again(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a run already waiting in Approve, announced once
    source_id, _ = respecs_source(people, make_source)
    execution = new_execution(source_id)
    validate(db, execution, approval_gate=True)
    announced = Announcements()
    assert ask(db, execution, announced) is None
    first = run_approval(db, execution)

    # When the same request is delivered again
    answer = ask(db, execution, announced)

    # Then it still waits, and nobody is told twice
    assert answer is None
    assert len(announced.details) == 1
    assert announced.attempts == 1
    again = run_approval(db, execution)
    assert again is not None and first is not None
    assert again["status"] == "waiting"
    assert again["announced_at"] == first["announced_at"]


def test_an_announcement_that_failed_is_sent_by_the_next_delivery(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a run about to wait in Approve, and an event bus that fails once
    source_id, _ = respecs_source(people, make_source)
    execution = new_execution(source_id)
    validate(db, execution, approval_gate=True)
    announced = Announcements(failures=1)

    # When the first delivery cannot announce
    with pytest.raises(RuntimeError, match="EventBridge is down"):
        ask(db, execution, announced)

    # Then the token is kept, but not marked announced
    kept = run_approval(db, execution)
    assert kept is not None
    assert kept["status"] == "waiting"
    assert kept["announced_at"] is None
    # When the request is delivered again
    assert ask(db, execution, announced) is None
    # Then it announces now, once, and remembers that it did
    assert announced.attempts == 2
    assert len(announced.details) == 1
    after = run_approval(db, execution)
    assert after is not None and after["announced_at"] is not None


def test_a_query_approved_meanwhile_answers_at_once(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a run validated as waiting, and then the same query approved for its source
    source_id, query = respecs_source(people, make_source)
    execution = new_execution(source_id)
    assert validate(db, execution, approval_gate=True)["approval_required"] is True
    remember(db, source_id, query, approved_in="another-run")
    announced = Announcements()

    # When the Approve task's request arrives
    fields = ask(db, execution, announced)

    # Then it answers at once with the remembered approval, valid as an approval-result
    assert fields is not None
    result = contracts.message("approval-result", correlation_id=execution.name, **fields)
    assert result["remembered"] is True
    assert result["decision"] == "approved"
    assert result["approved_by"] == APPROVER
    assert result["source_id"] == source_id
    assert result["execution_arn"] == execution.arn
    assert result["query_hash"] == approvals.query_hash(query)
    # And nobody is asked: no token kept, nothing announced
    assert run_approval(db, execution) is None
    assert announced.attempts == 0


def test_a_cancelled_run_does_not_wait(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a run validated as waiting, then cancelled before the Approve step began
    source_id, _ = respecs_source(people, make_source)
    execution = new_execution(source_id)
    validate(db, execution, approval_gate=True)
    with people[CANCELLER].transaction() as cur:
        cur.execute(
            "UPDATE public.source_run SET cancel_requested_at = now(), cancel_reason = %s"
            " WHERE execution_arn = %s",
            ("wrong table", execution.arn),
        )
    announced = Announcements()

    # When the Approve task's request arrives, Then it fails as RunCancelled, saying who and why
    with pytest.raises(RunCancelled, match=f"cancelled by {CANCELLER}: wrong table"):
        ask(db, execution, announced)
    # And nothing waits, nothing was announced
    assert run_approval(db, execution) is None
    assert announced.attempts == 0


def test_a_run_that_is_not_respecs_is_not_waiting(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a Normal run
    source_id = make_source(runtime_count=3, cursor=CURSOR)
    execution = new_execution(source_id)
    validate(db, execution, approval_gate=True)
    announced = Announcements()
    # When an approval is requested for it, Then it is refused by name
    with pytest.raises(RunNotWaiting, match="no running Re-specs run"):
        ask(db, execution, announced)
    assert run_approval(db, execution) is None
    assert announced.attempts == 0


def test_a_run_missing_from_the_ledger_is_not_waiting(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given an execution that was never validated
    source_id, _ = respecs_source(people, make_source)
    execution = new_execution(source_id)
    announced = Announcements()
    # When an approval is requested for it, Then it is refused, saying there is no run
    with pytest.raises(RunNotWaiting, match="no run"):
        ask(db, execution, announced)
    assert run_approval(db, execution) is None
    assert announced.attempts == 0


def test_a_redelivery_after_an_approval_reports_the_approval(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a waiting run that a person approved (the decision recorded)
    execution, query = waiting_run(db, people, make_source, new_execution)
    with people[APPROVER].transaction() as cur:
        approvals.decide(cur, execution.arn, "approved", reason=None)
    announced = Announcements()

    # When the Approve task's request is delivered again
    fields = ask(db, execution, announced)

    # Then it reports what the person decided (the approval, remembered for the source)
    assert fields is not None
    result = contracts.message("approval-result", correlation_id=execution.name, **fields)
    assert result["approved_by"] == APPROVER
    assert result["remembered"] is True
    assert result["query_hash"] == approvals.query_hash(query)
    assert announced.attempts == 0


def test_a_redelivery_after_a_rejection_fails_as_rejected(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a waiting run that a person rejected
    execution, _ = waiting_run(db, people, make_source, new_execution)
    with people[APPROVER].transaction() as cur:
        approvals.decide(cur, execution.arn, "rejected", reason="drops every row")
    announced = Announcements()

    # When the Approve task's request is delivered again, Then it fails as ApprovalRejected
    with pytest.raises(ApprovalRejected, match=f"rejected by {APPROVER}: drops every row"):
        ask(db, execution, announced)
    assert announced.attempts == 0


# --- a person answers: sourceflow approve | reject | approvals | cancel ------------------------


def test_approve_resumes_the_run_and_remembers_the_query(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a run waiting for approval of alice's query
    execution, query = waiting_run(db, people, make_source, new_execution)
    callbacks = approval_callbacks()

    # When bob approves it
    approve(people[APPROVER], callbacks, execution.name)

    # Then one valid approval-result goes to the kept token
    assert callbacks.failed == []
    [(token, output)] = callbacks.succeeded
    assert token == approval_request(execution)["task_token"]
    contracts.validate(output, "approval-result")
    assert output["correlation_id"] == execution.name
    assert output["execution_arn"] == execution.arn
    assert output["approved_by"] == APPROVER
    assert output["remembered"] is False
    assert output["query_hash"] == approvals.query_hash(query)
    # And the approval is remembered for the source, naming who and in which run
    [remembered] = remembered_approvals(db, execution.source_id)
    assert remembered["approved_by"] == APPROVER
    assert remembered["approved_in"] == execution.name
    assert remembered["query_hash"] == approvals.query_hash(query)
    # And the run's approval is decided
    approval = run_approval(db, execution)
    assert approval is not None
    assert (approval["status"], approval["decided_by"]) == ("approved", APPROVER)
    assert approval["decided_at"] is not None


def test_the_person_who_asked_cannot_approve(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a run waiting for approval of alice's query
    execution, _ = waiting_run(db, people, make_source, new_execution)
    before = run_approval(db, execution)
    callbacks = approval_callbacks()

    # When alice approves it herself, Then she is told a second person must
    with pytest.raises(ApprovalError, match="second person"):
        approve(people[REQUESTER], callbacks, execution.name)

    # And nothing changed: no answer, still waiting, nothing remembered
    assert callbacks.succeeded == [] and callbacks.failed == []
    assert run_approval(db, execution) == before
    assert remembered_approvals(db, execution.source_id) == []


@pytest.mark.parametrize("answer", ["approve", "reject"])
def test_an_answer_to_a_task_that_is_over_records_nothing(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution, answer: str
) -> None:
    # Given a waiting run whose Approve task Step Functions already ended (timed out)
    execution, _ = waiting_run(db, people, make_source, new_execution)
    before = run_approval(db, execution)
    ledger_before = run_row(db, execution.arn)
    callbacks = approval_callbacks(over=True)

    # When a person approves or rejects it, Then they are told it no longer waits
    with pytest.raises(ApprovalError, match="no longer waits") as caught:
        if answer == "approve":
            approve(people[APPROVER], callbacks, execution.name)
        else:
            reject(people[APPROVER], callbacks, execution.name, reason="no")
    assert "nothing was recorded" in str(caught.value)

    # And nothing was recorded: still waiting, nothing remembered, the ledger as it was
    assert run_approval(db, execution) == before
    assert remembered_approvals(db, execution.source_id) == []
    assert run_row(db, execution.arn) == ledger_before


def test_reject_fails_the_run_by_name_and_keeps_why_in_the_ledger(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a run waiting for approval
    execution, _ = waiting_run(db, people, make_source, new_execution)
    callbacks = approval_callbacks()

    # When bob rejects it with a reason
    reject(people[APPROVER], callbacks, execution.name, reason="drops every row")

    # Then the kept token fails as ApprovalRejected, saying who and why
    assert callbacks.succeeded == []
    [(token, error, detail)] = callbacks.failed
    assert token == approval_request(execution)["task_token"]
    assert error == "ApprovalRejected"
    assert APPROVER in detail and "drops every row" in detail
    # And the ledger keeps the failure where the operator reads it
    step, ledger_error, ledger_detail = ledger_failure(db, execution)
    assert (step, ledger_error) == ("Approve", "ApprovalRejected")
    assert APPROVER in ledger_detail and "drops every row" in ledger_detail
    # And the approval is decided, nothing remembered
    approval = run_approval(db, execution)
    assert approval is not None
    assert (approval["status"], approval["decided_by"], approval["reason"]) == (
        "rejected",
        APPROVER,
        "drops every row",
    )
    assert remembered_approvals(db, execution.source_id) == []


def test_approving_an_unknown_run_says_where_to_look(db: Database, people: People) -> None:
    # Given no such run, When it is approved or rejected, Then the error points at the list
    callbacks = approval_callbacks()
    with pytest.raises(ApprovalError, match=r"not waiting for an approval.*sourceflow approvals"):
        approve(people[APPROVER], callbacks, "it-no-such-run-00000000")
    with pytest.raises(ApprovalError, match="not waiting for an approval"):
        reject(people[APPROVER], callbacks, "it-no-such-run-00000000", reason="x")
    assert callbacks.succeeded == [] and callbacks.failed == []


def test_a_decided_approval_cannot_be_answered_again(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a run bob already approved
    execution, _ = waiting_run(db, people, make_source, new_execution)
    approve(people[APPROVER], approval_callbacks(), execution.arn)
    callbacks = approval_callbacks()

    # When anyone answers it again, Then they are told who decided it already
    with pytest.raises(ApprovalError, match=f"already approved by {APPROVER}"):
        approve(people[CANCELLER], callbacks, execution.name)
    with pytest.raises(ApprovalError, match=f"already approved by {APPROVER}"):
        reject(people[CANCELLER], callbacks, execution.name, reason="too late")
    # And nothing was sent
    assert callbacks.succeeded == [] and callbacks.failed == []


def test_a_run_that_ended_cannot_be_approved(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a waiting approval whose run has ended (failed) meanwhile
    execution, _ = waiting_run(db, people, make_source, new_execution)
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source_run SET status = 'failed', finished_at = now()"
            " WHERE execution_arn = %s",
            (execution.arn,),
        )
    callbacks = approval_callbacks()

    # When it is approved, Then the error says the run ended and how to see it
    with pytest.raises(ApprovalError, match="no longer waits: it ended failed") as caught:
        approve(people[APPROVER], callbacks, execution.name)
    assert f"sourceflow runs --source {execution.source_id}" in str(caught.value)
    # And nothing was sent or remembered
    assert callbacks.succeeded == [] and callbacks.failed == []
    assert remembered_approvals(db, execution.source_id) == []


def test_the_list_shows_only_waiting_runs_oldest_first(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given five runs that asked for approval:
    newer, _ = waiting_run(db, people, make_source, new_execution)
    older, _ = waiting_run(db, people, make_source, new_execution)
    decided, _ = waiting_run(db, people, make_source, new_execution)
    cancelling, _ = waiting_run(db, people, make_source, new_execution)
    ended, _ = waiting_run(db, people, make_source, new_execution)
    with db.transaction() as cur:
        # ... `older` asked an hour before `newer` (although it was recorded after it)
        cur.execute(
            "UPDATE public.run_approval SET requested_at = requested_at - interval '1 hour'"
            " WHERE execution_arn = %s",
            (older.arn,),
        )
        # ... `cancelling` is being cancelled
        cur.execute(
            "UPDATE public.source_run SET cancel_requested_at = now(), cancel_reason = 'x'"
            " WHERE execution_arn = %s",
            (cancelling.arn,),
        )
        # ... and `ended`'s run has ended
        cur.execute(
            "UPDATE public.source_run SET status = 'failed', finished_at = now()"
            " WHERE execution_arn = %s",
            (ended.arn,),
        )
    with people[APPROVER].transaction() as cur:
        # ... `decided` was approved
        approvals.decide(cur, decided.arn, "approved", reason=None)
    mine = {run.source_id for run in (newer, older, decided, cancelling, ended)}

    # When the waiting approvals are listed
    listed = [row for row in list_waiting(db) if row["source_id"] in mine]

    # Then only the two that still wait are there, oldest first
    assert [row["execution_name"] for row in listed] == [older.name, newer.name]
    first = listed[0]
    assert first["requested_by"] == REQUESTER
    assert first["execution_arn"] == older.arn
    assert first["expires_at"] == NOW + TIMEOUT


def test_cancel_answers_a_waiting_run_at_once(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a run waiting for approval
    execution, _ = waiting_run(db, people, make_source, new_execution)
    callbacks = approval_callbacks()

    # When carol cancels it
    cancelled = cancel_run(people[CANCELLER], callbacks, execution.name, reason="wrong table")

    # Then the kept token fails as RunCancelled at once, saying who and why
    assert cancelled["execution_arn"] == execution.arn
    detail = f"cancelled by {CANCELLER}: wrong table"
    assert callbacks.failed == [(approval_request(execution)["task_token"], "RunCancelled", detail)]
    assert callbacks.succeeded == []
    # And the approval is marked cancelled
    approval = run_approval(db, execution)
    assert approval is not None
    assert (approval["status"], approval["decided_by"], approval["reason"]) == (
        "cancelled",
        CANCELLER,
        "wrong table",
    )
    # And the ledger keeps the cancel and the failure it caused
    run = run_row(db, execution.arn)
    assert run is not None
    assert run["cancel_requested_by"] == CANCELLER
    assert run["cancel_requested_at"] is not None
    assert ledger_failure(db, execution) == ("Approve", "RunCancelled", detail)


def test_cancel_stands_when_the_wait_already_ended(
    db: Database, people: People, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a run waiting for approval whose Approve task already timed out
    execution, _ = waiting_run(db, people, make_source, new_execution)
    callbacks = approval_callbacks(over=True)

    # When carol cancels it, Then the cancel does not fail
    cancel_run(people[CANCELLER], callbacks, execution.name, reason="wrong table")

    # And it is recorded all the same: approval cancelled, cancel and failure in the ledger
    approval = run_approval(db, execution)
    assert approval is not None and approval["status"] == "cancelled"
    run = run_row(db, execution.arn)
    assert run is not None and run["cancel_requested_by"] == CANCELLER
    assert ledger_failure(db, execution) == (
        "Approve",
        "RunCancelled",
        f"cancelled by {CANCELLER}: wrong table",
    )
