"""Run-ledger writes that every service makes the same way.

The ledger (`public.source_run`) is where an operator reads what happened to a run; the
state machine only carries error names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg2.extras import Json

from shared.errors import RunCancelled
from shared.store.db import Database, fetch_one

# A run in one of these is still under way; any other status (succeeded, failed, skipped,
# cancelled) is its end, which nothing may write over.
OPEN_RUN_STATUSES = ("running", "downloaded")


def failure_recorder(db: Database, step: str) -> Any:
    """A `FailureRecorder` that writes a step's failure detail into the execution's ledger row."""

    def record(message: Mapping[str, Any], error_name: str, detail: str) -> None:
        with db.transaction() as cur:
            note_failure(cur, message, step=step, error_name=error_name, detail=detail)

    return record


def note_failure(
    cur: Any, message: Mapping[str, Any], *, step: str, error_name: str, detail: str
) -> None:
    """Write why a step failed into the run's ledger row, where unlocking keeps it. The row may
    not exist yet (validation failed before recording anything), so it is created; a row that
    already ended keeps its outcome."""
    cur.execute(
        """
        INSERT INTO public.source_run
            (execution_arn, execution_name, source_id, status, failed_step, error, error_detail)
        VALUES (%(arn)s, %(name)s, %(source_id)s, 'running', %(step)s, %(error)s, %(detail)s)
        ON CONFLICT (execution_arn) DO UPDATE
           SET failed_step = EXCLUDED.failed_step,
               error = EXCLUDED.error,
               error_detail = EXCLUDED.error_detail
         WHERE source_run.status IN %(open)s
        """,
        {
            "arn": message["execution_arn"],
            "name": message["execution_name"],
            "source_id": message["source_id"],
            "step": step,
            "error": error_name,
            "detail": detail,
            "open": OPEN_RUN_STATUSES,
        },
    )


def set_flow_params(
    cur: Any,
    source_id: str,
    to_params: Mapping[str, Any] | None,
    *,
    changed_by: str,
    reason: str,
    expected: Mapping[str, Any] | None = None,
    check_expected: bool = False,
    request_id: str | None = None,
) -> bool:
    """Change a source's `batch_execution_params`; the database's trigger records the change
    in the flow history with `changed_by`, `reason` and `request_id`.

    With `check_expected`, the change applies only if the params are still `expected`
    (compare-and-set: a decision made on stale params loses to an operator's edit).
    Returns whether the change was applied.
    """
    condition = (
        "AND batch_execution_params IS NOT DISTINCT FROM %(expected)s" if check_expected else ""
    )
    _attribute_changes(cur, changed_by, reason, request_id or "")
    cur.execute(
        f"""
        UPDATE public.source SET batch_execution_params = %(to)s, updated_at = now()
         WHERE source_id = %(source_id)s {condition}
        RETURNING source_id
        """,
        {
            "source_id": source_id,
            "expected": Json(expected) if expected is not None else None,
            "to": Json(to_params) if to_params is not None else None,
        },
    )
    applied = cur.fetchone() is not None
    # Later statements of the same transaction must not be attributed to this change.
    _attribute_changes(cur, "", "", "")
    return applied


def _attribute_changes(cur: Any, changed_by: str, reason: str, request_id: str) -> None:
    cur.execute(
        "SELECT set_config('sourceflow.changed_by', %s, true),"
        " set_config('sourceflow.change_reason', %s, true),"
        " set_config('sourceflow.change_request', %s, true)",
        (changed_by, reason, request_id),
    )


def cancellation(cur: Any, execution_arn: str) -> RunCancelled | None:
    """The operator's cancel request for this run, as the error its steps stop with."""
    row = fetch_one(
        cur,
        "SELECT cancel_requested_at, cancel_requested_by, cancel_reason FROM public.source_run"
        " WHERE execution_arn = %s AND cancel_requested_at IS NOT NULL",
        (execution_arn,),
    )
    if row is None:
        return None
    return RunCancelled(cancel_detail(row["cancel_requested_by"], row["cancel_reason"]))


def cancel_detail(requested_by: str, reason: str) -> str:
    return f"cancelled by {requested_by}: {reason}"
