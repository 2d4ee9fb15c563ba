"""The Approve step: a run whose Re-specs query nobody approved yet waits for a second person.

Validation decides whether a run needs approval (`approval_required`); the state machine then
sends an approval-request with the Approve task's token. `request_approval` keeps that token
for `sourceflow approve|reject` (the answer comes from a person, so it reports nothing), holds
the source's lock for as long as the wait may last, and announces `Approval Requested`.
It answers at once only if the same query was approved for the source meanwhile, or the run
was cancelled. `ask_for_approval` is the Approve task's work: `request_approval`, announcing
through the event bus's publisher.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from services.validation import adapters
from shared.errors import LockLost, PermanentError
from shared.rules.flows import FlowType
from shared.runtime.catalogue import DetailType
from shared.store import approvals, runs
from shared.store.db import Database
from shared.store.runs import RunStatus
from shared.timefmt import isoformat, utc_now


class RunNotWaiting(PermanentError):
    error_name = "RunNotWaiting"


class ApprovalRejected(PermanentError):
    error_name = "ApprovalRejected"


def approval_required(cur: Any, run: Mapping[str, Any], *, gate_on: bool) -> bool:
    """Whether a recorded run waits for a person before it downloads."""
    if not gate_on or run["flow_type"] != FlowType.RESPECS.value:
        return False
    query = run["flow_params"]["sql"]
    return approvals.remembered(cur, run["source_id"], approvals.query_hash(query)) is None


def request_approval(
    request: Mapping[str, Any],
    *,
    db: Database,
    clock: Callable[[], datetime],
    timeout: timedelta,
    lease: timedelta,
    announce: Callable[[Mapping[str, Any]], None],
) -> dict[str, Any] | None:
    """Keep the Approve task's token; the fields of an approval-result when no person need
    answer, else None."""
    execution_arn, source_id = request["execution_arn"], request["source_id"]
    with db.transaction() as cur:
        # The run's row lock orders this against a cancel: either the cancel is seen here, or
        # the cancel finds the token kept and answers it.
        run = adapters.find_run(cur, execution_arn, for_update=True)
        if (
            run is None
            or run["status"] != RunStatus.RUNNING
            or run["flow_type"] != FlowType.RESPECS.value
        ):
            raise RunNotWaiting(
                f"execution {execution_arn} has no running Re-specs run in the ledger "
                f"({run['status'] if run else 'no run'}); there is nothing to approve"
            )
        if cancelled := runs.cancellation(cur, execution_arn):
            raise cancelled
        query = run["flow_params"]["sql"]
        hash_ = approvals.query_hash(query)
        earlier = approvals.remembered(cur, source_id, hash_)
        if earlier is not None:
            return approvals.result_fields(
                {**request, "query_hash": hash_},
                approved_by=earlier["approved_by"],
                approved_at=earlier["approved_at"],
                remembered=True,
            )
        approval = approvals.record_request(
            cur,
            execution_arn=execution_arn,
            source_id=source_id,
            query=query,
            hash_=hash_,
            task_token=request["task_token"],
            expires_at=clock() + timeout,
        )
        if approval["status"] != "waiting":
            # A redelivery after a person answered: report what they decided again.
            return _decided(approval)
        # The lock must outlast the wait, or another run could take the source meanwhile.
        if not runs.extend_lock(cur, source_id, execution_arn, approval["expires_at"] + lease):
            raise LockLost(
                f"source {source_id!r} is no longer locked by {execution_arn}; not waiting for "
                "an approval"
            )
    if approval["announced_at"] is None:
        announce(
            {
                "source_id": source_id,
                "execution_arn": execution_arn,
                "execution_name": request["execution_name"],
                "query": query,
                "query_hash": hash_,
                "requested_by": approval["requested_by"],
                "requested_at": isoformat(approval["requested_at"]),
                "expires_at": isoformat(approval["expires_at"]),
            }
        )
        with db.transaction() as cur:
            approvals.mark_announced(cur, execution_arn)
    return None


def ask_for_approval(
    request: Mapping[str, Any],
    *,
    db: Database,
    timeout: timedelta,
    lease: timedelta,
    publish: Callable[..., object],
    clock: Callable[[], datetime] = utc_now,
) -> dict[str, Any] | None:
    """`request_approval`, announcing `Approval Requested` through `publish` (an
    EventPublisher) under the request's correlation id."""

    def announce(fields: Mapping[str, Any]) -> None:
        publish(DetailType.APPROVAL_REQUESTED, fields, correlation_id=request["correlation_id"])

    return request_approval(
        request, db=db, clock=clock, timeout=timeout, lease=lease, announce=announce
    )


def _decided(approval: Mapping[str, Any]) -> dict[str, Any]:
    if approval["status"] == "approved":
        return approvals.result_fields(
            approval,
            approved_by=approval["decided_by"],
            approved_at=approval["decided_at"],
            remembered=False,
        )
    # A cancel is seen before this (the ledger's cancel request), so this is a rejection.
    raise ApprovalRejected(f"rejected by {approval['decided_by']}: {approval['reason']}")
