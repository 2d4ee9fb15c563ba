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


def approve(
    db: Database, callbacks: TaskCallbacks, run: str, *, approved_by: str
) -> dict[str, Any]:
    """Approve RUN's query (remembered for its source) and let the run go on to Download."""
    with db.transaction() as cur:
        approval = _waiting(cur, run)
        if approved_by == approval["requested_by"]:
            raise ApprovalError(
                f"run {approval['execution_name']}: {approved_by} asked for this Re-specs "
                "query, so a second person must approve it"
            )
        approved_at = approvals.remember(
            cur,
            source_id=approval["source_id"],
            hash_=approval["query_hash"],
            query=approval["query"],
            approved_by=approved_by,
            approved_in=approval["execution_name"],
        )
        approvals.decide(cur, approval["execution_arn"], "approved", by=approved_by, reason=None)
        result = contracts.message(
            "approval-result",
            correlation_id=approval["execution_name"],
            **approvals.result_fields(
                approval, approved_by=approved_by, approved_at=approved_at, remembered=False
            ),
        )
        _answer(approval, lambda: callbacks.succeed(approval["task_token"], result))
    return approval


def reject(
    db: Database, callbacks: TaskCallbacks, run: str, *, rejected_by: str, reason: str
) -> dict[str, Any]:
    """Reject RUN's query: the run fails as ApprovalRejected, unlocked, cursor unchanged."""
    with db.transaction() as cur:
        approval = _waiting(cur, run)
        approvals.decide(cur, approval["execution_arn"], "rejected", by=rejected_by, reason=reason)
        detail = f"the Re-specs query was rejected by {rejected_by}: {reason}"
        # Step Functions (the emulator) may drop a failure's cause: the ledger keeps it.
        note_failure(cur, approval, step=STEP, error_name="ApprovalRejected", detail=detail)
        token = approval["task_token"]
        _answer(approval, lambda: callbacks.fail(token, "ApprovalRejected", detail))
    return approval


def cancel_waiting(
    cur: Any, callbacks: TaskCallbacks, execution_arn: str, *, requested_by: str, reason: str
) -> None:
    """Part of a cancel, in its transaction: a run waiting in Approve is answered at once."""
    approval = approvals.find(cur, execution_arn, for_update=True)
    if approval is None or approval["status"] != "waiting":
        return
    approvals.decide(cur, execution_arn, "cancelled", by=requested_by, reason=reason)
    detail = cancel_detail(requested_by, reason)
    note_failure(cur, approval, step=STEP, error_name="RunCancelled", detail=detail)
    # A wait that already ended (timed out) cannot be answered; the cancel stands in the ledger.
    with contextlib.suppress(TaskOver):
        callbacks.fail(approval["task_token"], "RunCancelled", detail)


def _waiting(cur: Any, run: str) -> dict[str, Any]:
    approval = approvals.find(cur, run, for_update=True)
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
