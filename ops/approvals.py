"""A person answers a run waiting in Approve: `sourceflow approvals | approve RUN | reject RUN`.

The validation service kept the Approve task's token in `public.run_approval`; answering it
resumes the execution (SendTaskSuccess with an approval-result) or fails it by name
(`ApprovalRejected`). The decision and the answer happen together: if Step Functions says the
task is over (it timed out, or the run ended), nothing is recorded and the operator is told.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from shared.errors import SourceflowError, TaskOver
from shared.runtime import contracts
from shared.runtime.catalogue import Step
from shared.runtime.tasks import TaskCallbacks
from shared.store import approvals
from shared.store.db import Database
from shared.store.runs import RunStatus, cancel_detail, note_failure

STEP = Step.APPROVE


class ApprovalError(SourceflowError):
    """The run cannot be approved or rejected now; the message says why and what to do."""


def list_waiting(db: Database) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        return approvals.waiting(cur)


def approve(db: Database, callbacks: TaskCallbacks, run: str) -> dict[str, Any]:
    """Approve RUN's query as the connected person (remembered for its source) and let the run
    go on to Download. The database refuses the person who asked for the query."""
    with db.transaction() as cur:
        approval = _waiting(cur, run)
        decision = _decide(cur, approval, "approved", reason=None)
        assert decision.approved_at is not None
        result = contracts.message(
            "approval-result",
            correlation_id=approval["execution_name"],
            **approvals.result_fields(
                approval,
                approved_by=decision.person,
                approved_at=decision.approved_at,
                remembered=False,
            ),
        )
        _answer(approval, lambda: callbacks.succeed(approval["task_token"], result))
    return {**approval, "decided_by": decision.person}


def reject(db: Database, callbacks: TaskCallbacks, run: str, *, reason: str) -> dict[str, Any]:
    """Reject RUN's query as the connected person: the run fails as ApprovalRejected, unlocked,
    cursor unchanged."""
    with db.transaction() as cur:
        approval = _waiting(cur, run)
        decision = _decide(cur, approval, "rejected", reason=reason)
        detail = f"the Re-specs query was rejected by {decision.person}: {reason}"
        # Step Functions (the emulator) may drop a failure's cause: the ledger keeps it.
        note_failure(cur, approval, step=STEP, error_name="ApprovalRejected", detail=detail)
        token = approval["task_token"]
        _answer(approval, lambda: callbacks.fail(token, "ApprovalRejected", detail))
    return {**approval, "decided_by": decision.person}


def cancel_waiting(cur: Any, callbacks: TaskCallbacks, execution_arn: str, *, reason: str) -> None:
    """Part of a cancel, in its transaction: a run waiting in Approve is answered at once."""
    approval = approvals.find(cur, execution_arn)
    if approval is None or approval["status"] != "waiting":
        return
    decision = _decide(cur, approval, "cancelled", reason=reason)
    detail = cancel_detail(decision.person, reason)
    note_failure(cur, approval, step=STEP, error_name="RunCancelled", detail=detail)
    # A wait that already ended (timed out) cannot be answered; the cancel stands in the ledger.
    with contextlib.suppress(TaskOver):
        callbacks.fail(approval["task_token"], "RunCancelled", detail)


def revoke(db: Database, source_id: str, hash_prefix: str, *, reason: str) -> dict[str, Any]:
    """Withdraw a remembered approval of SOURCE's query (its hash, or a prefix of at least 8
    characters naming one): the next run of that query waits for a person again."""
    with db.transaction() as cur:
        known = approvals.remembered_for(cur, source_id)
        matches = [a for a in known if a["query_hash"].startswith(hash_prefix.lower())]
        if len(hash_prefix) < 8 or len(matches) != 1:
            found = "none matches" if not matches else f"{len(matches)} match"
            raise ApprovalError(
                f"source {source_id!r}: give 8 or more characters of one remembered query's hash "
                f"({found} {hash_prefix!r}); `sourceflow approvals remembered {source_id}` lists "
                "them"
            )
        try:
            return approvals.revoke(cur, source_id, matches[0]["query_hash"], reason=reason)
        except approvals.DecisionRefused as exc:
            raise ApprovalError(f"source {source_id!r}: {exc}") from None


def remembered(db: Database, source_id: str) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        return approvals.remembered_for(cur, source_id)


def _decide(
    cur: Any, approval: dict[str, Any], decision: str, *, reason: str | None
) -> approvals.Decision:
    try:
        return approvals.decide(cur, approval["execution_arn"], decision, reason=reason)
    except approvals.DecisionRefused as exc:
        raise ApprovalError(f"run {approval['execution_name']}: {exc}") from None


def _waiting(cur: Any, run: str) -> dict[str, Any]:
    approval = approvals.find(cur, run)
    if approval is None:
        raise ApprovalError(
            f"run {run!r} is not waiting for an approval; `sourceflow approvals` lists the runs "
            "that are"
        )
    if approval["status"] != "waiting":
        raise ApprovalError(
            f"run {approval['execution_name']} was already {approval['status']} by "
            f"{approval['decided_by']}"
        )
    if approval["run_status"] != RunStatus.RUNNING:
        raise ApprovalError(
            f"run {approval['execution_name']} no longer waits: it ended "
            f"{approval['run_status']} (`sourceflow runs --source {approval['source_id']}`)"
        )
    return approval


def _answer(approval: dict[str, Any], send: Callable[[], None]) -> None:
    try:
        send()
    except TaskOver as exc:
        raise ApprovalError(
            f"run {approval['execution_name']} no longer waits for approval ({exc}: its approval "
            "timed out or the run ended); nothing was recorded"
        ) from None
