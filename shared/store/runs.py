"""The lock and run protocol: the only writer of a source's lock and of a run's status.

A source is held by one execution at a time through a lease on `public.source` (`locked_by`,
`locked_at`, `lock_expires_at`): validation takes it with the runtime count, the Approve step
extends it for a person's answer, the download's heartbeat renews it, unlocking releases it.
Every write after the take is fenced by the execution's ARN (`... AND locked_by = <arn>`), so
an execution that lost its lock — its lease ran out and another run took the source — writes
nothing. Whether a lease still counts is the pure rule `shared.rules.leases.lease_is_live`.

Each run is a row of the ledger (`public.source_run`), keyed on its execution ARN: started
(`running`) or skipped by validation, `downloaded` once by the delivery holding the download's
claim while its execution holds the lock, then ended `succeeded` (with the cursor move) or
`failed`/`cancelled` by unlocking. A status outside `OPEN_RUN_STATUSES` is the run's end,
which nothing writes over. An operator's cancel is a request on the row that the step in
progress notices (`cancellation`).

The functions take the caller's cursor: a step's decision commits (or rolls back) in one
transaction with whatever else it changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from psycopg2.extras import Json

from shared.errors import LockLost, RunCancelled
from shared.rules.flows import Window
from shared.store.db import Database, fetch_one


class RunStatus(StrEnum):
    """A run's status in the ledger (the column's CHECK constraint allows these)."""

    RUNNING = "running"
    DOWNLOADED = "downloaded"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


# A run in one of these is still under way; any other status is its end, which nothing may
# write over.
OPEN_RUN_STATUSES = (RunStatus.RUNNING, RunStatus.DOWNLOADED)

# -- the lock ---------------------------------------------------------------------------------


def take_lock(
    cur: Any, source_id: str, execution_arn: str, *, runtime_count: int, expires_at: datetime
) -> None:
    """Lock the source for the execution until `expires_at` and count the run.

    Not fenced in SQL: the caller (validation) has read the source row `FOR UPDATE` in this
    transaction and found no live lease of another execution (`lease_is_live`), so no other
    take can come between that decision and this write."""
    cur.execute(
        """
        UPDATE public.source
           SET runtime_count = %(runtime_count)s,
               locked_by = %(arn)s, locked_at = now(), lock_expires_at = %(expires)s,
               updated_at = now()
         WHERE source_id = %(source_id)s
        """,
        {
            "runtime_count": runtime_count,
            "arn": execution_arn,
            "expires": expires_at,
            "source_id": source_id,
        },
    )


def extend_lock(cur: Any, source_id: str, execution_arn: str, until: datetime) -> bool:
    """Extend the run's lease to `until` (never shortening it); False if the lock is not its."""
    cur.execute(
        """
        UPDATE public.source SET lock_expires_at = GREATEST(lock_expires_at, %s)
         WHERE source_id = %s AND locked_by = %s
        RETURNING source_id
        """,
        (until, source_id, execution_arn),
    )
    return cur.fetchone() is not None


def renew_lock(cur: Any, source_id: str, execution_arn: str, lease: timedelta) -> bool:
    """Renew the run's lease for `lease` from now; False if the lock is not its."""
    cur.execute(
        """
        UPDATE public.source SET lock_expires_at = now() + %s
         WHERE source_id = %s AND locked_by = %s
        """,
        (lease, source_id, execution_arn),
    )
    return bool(cur.rowcount == 1)


def release_lock(cur: Any, source_id: str, execution_arn: str) -> bool:
    """Release the source's lock if this execution holds it; False (nothing changed) if not."""
    # The fence: only the holder's ARN matches, so someone else's lock is never released.
    cur.execute(
        """
        UPDATE public.source
           SET locked_by = NULL, locked_at = NULL, lock_expires_at = NULL, updated_at = now()
         WHERE source_id = %s AND locked_by = %s
        """,
        (source_id, execution_arn),
    )
    return bool(cur.rowcount == 1)


# -- the run ----------------------------------------------------------------------------------
# `run` below is any message of the run: it carries `execution_arn`, `execution_name` and
# `source_id`.


def start_run(
    cur: Any,
    run: Mapping[str, Any],
    *,
    flow_type: str,
    flow_params: Mapping[str, Any],
    window: Window,
    runtime_count: int,
) -> None:
    """Record the run as `running` with its frozen window; the source's cursor and lateness
    allowance as they are now go with it."""
    cur.execute(
        """
        INSERT INTO public.source_run
            (execution_arn, execution_name, source_id, status, flow_type, flow_params,
             window_field, window_start, window_end, window_start_inclusive, runtime_count,
             cursor_before, lateness_allowance, started_at)
        SELECT %(arn)s, %(name)s, %(source_id)s, %(running)s, %(flow)s, %(params)s,
               %(field)s, %(start)s, %(end)s, %(inclusive)s, %(runtime_count)s,
               s.last_modified_date, s.lateness_allowance, %(end)s
          FROM public.source s WHERE s.source_id = %(source_id)s
        """,
        {
            "arn": run["execution_arn"],
            "name": run["execution_name"],
            "source_id": run["source_id"],
            "running": RunStatus.RUNNING,
            "flow": flow_type,
            "params": Json(dict(flow_params)),
            "field": window.field.value,
            "start": window.start,
            "end": window.end,
            "inclusive": window.start_inclusive,
            "runtime_count": runtime_count,
        },
    )


def skip_run(cur: Any, run: Mapping[str, Any], *, reason: str, detail: str) -> None:
    """Record the run as `skipped` (ended at once), and why."""
    cur.execute(
        """
        INSERT INTO public.source_run
            (execution_arn, execution_name, source_id, status, error, error_detail, finished_at)
        VALUES (%s, %s, %s, %s, %s, %s, now())
        """,
        (
            run["execution_arn"],
            run["execution_name"],
            run["source_id"],
            RunStatus.SKIPPED,
            reason,
            detail,
        ),
    )


def open_run(cur: Any, run: Mapping[str, Any]) -> None:
    """A run that failed before validation recorded anything still gets its ledger row
    (`running`, until `fail_run` ends it); a recorded run is left as it is."""
    cur.execute(
        """
        INSERT INTO public.source_run (execution_arn, execution_name, source_id, status)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT (execution_arn) DO NOTHING
        """,
        (run["execution_arn"], run["execution_name"], run["source_id"], RunStatus.RUNNING),
    )


def mark_downloaded(
    cur: Any, result: Mapping[str, Any], attempt: str, *, warnings: list[str] | None = None
) -> dict[str, Any] | None:
    """Move the run to `downloaded` once, only for the delivery holding the claim and while
    this execution holds the source's lock; `warnings` are the download's, for the operator
    (they go out with the Run Succeeded event).

    Returns the recorded run; if a concurrent duplicate recorded it first, that record; None if
    the lock was lost.
    """
    row = fetch_one(
        cur,
        """
        UPDATE public.source_run r
           SET status = %(downloaded)s, records = %(records)s, bytes = %(bytes)s,
               objects = %(objects)s, manifest_key = %(manifest_key)s,
               max_last_modified = %(max_last_modified)s,
               malformed_records = %(malformed_records)s,
               late_records = %(late_records)s,
               duplicates_skipped = %(duplicates_skipped)s,
               future_records = %(future_records)s,
               download_warnings = %(warnings)s
          FROM public.source s
         WHERE r.execution_arn = %(execution_arn)s AND r.status = %(running)s
           AND r.download_attempt = %(attempt)s
           AND s.source_id = r.source_id AND s.locked_by = r.execution_arn
        RETURNING r.*
        """,
        {
            **result,
            "attempt": attempt,
            "warnings": warnings or None,
            "downloaded": RunStatus.DOWNLOADED,
            "running": RunStatus.RUNNING,
        },
    )
    if row is not None:
        return row
    return fetch_one(
        cur,
        "SELECT * FROM public.source_run WHERE execution_arn = %s AND status = %s",
        (result["execution_arn"], RunStatus.DOWNLOADED),
    )


def finish_run(
    cur: Any,
    source_id: str,
    execution_arn: str,
    *,
    cursor_before: datetime | None,
    cursor_after: datetime | None,
    respecs_rows: int | None,
) -> dict[str, Any]:
    """Move the cursor and end the run `succeeded`; returns the run's ledger row as it ended.

    Only the lock holder finishes: if the execution does not hold the source's lock, LockLost
    is raised before the run is touched (the caller's transaction rolls the rest back)."""
    cur.execute(
        """
        UPDATE public.source SET last_modified_date = %s, updated_at = now()
         WHERE source_id = %s AND locked_by = %s
        """,
        (cursor_after, source_id, execution_arn),
    )
    if cur.rowcount != 1:
        raise LockLost(
            f"source {source_id!r} is not locked by {execution_arn}; the run is not finished"
        )
    cur.execute(
        """
        UPDATE public.source_run
           SET status = %s, finished_at = now(), cursor_before = %s, cursor_after = %s,
               respecs_rows = %s
         WHERE execution_arn = %s
        RETURNING *
        """,
        (RunStatus.SUCCEEDED, cursor_before, cursor_after, respecs_rows, execution_arn),
    )
    return dict(cur.fetchone())


def fail_run(
    cur: Any, execution_arn: str, *, failed_step: str, error: str, cause: str
) -> dict[str, Any]:
    """End the run `failed`, or `cancelled` if an operator asked for it (or the error says so);
    returns the run's ledger row as it ended. The failing step's own detail (`note_failure`)
    is kept, and what is missing filled in."""
    cur.execute(
        """
        UPDATE public.source_run
           SET status = CASE WHEN cancel_requested_at IS NOT NULL OR %(error)s = 'RunCancelled'
                             THEN %(cancelled)s ELSE %(failed)s END,
               finished_at = now(),
               failed_step = COALESCE(failed_step, %(step)s),
               error = COALESCE(error, %(error)s),
               error_detail = COALESCE(error_detail, NULLIF(%(cause)s, ''))
         WHERE execution_arn = %(arn)s
        RETURNING *
        """,
        {
            "arn": execution_arn,
            "step": failed_step,
            "error": error,
            "cause": cause,
            "cancelled": RunStatus.CANCELLED,
            "failed": RunStatus.FAILED,
        },
    )
    return dict(cur.fetchone())


def note_failure(
    cur: Any, run: Mapping[str, Any], *, step: str, error_name: str, detail: str
) -> None:
    """Write why a step failed into the run's ledger row, where unlocking keeps it. The row may
    not exist yet (validation failed before recording anything), so it is created; a row that
    already ended keeps its outcome."""
    cur.execute(
        """
        INSERT INTO public.source_run
            (execution_arn, execution_name, source_id, status, failed_step, error, error_detail)
        VALUES (%(arn)s, %(name)s, %(source_id)s, %(running)s, %(step)s, %(error)s, %(detail)s)
        ON CONFLICT (execution_arn) DO UPDATE
           SET failed_step = EXCLUDED.failed_step,
               error = EXCLUDED.error,
               error_detail = EXCLUDED.error_detail
         WHERE source_run.status IN %(open)s
        """,
        {
            "arn": run["execution_arn"],
            "name": run["execution_name"],
            "source_id": run["source_id"],
            "running": RunStatus.RUNNING,
            "step": step,
            "error": error_name,
            "detail": detail,
            "open": OPEN_RUN_STATUSES,
        },
    )


def failure_recorder(db: Database, step: str) -> Any:
    """A `FailureRecorder` that writes a step's failure detail into the execution's ledger row."""

    def record(message: Mapping[str, Any], error_name: str, detail: str) -> None:
        with db.transaction() as cur:
            note_failure(cur, message, step=step, error_name=error_name, detail=detail)

    return record


# -- cancelling -------------------------------------------------------------------------------


def request_cancel(cur: Any, run: str, *, reason: str) -> dict[str, Any] | None:
    """Ask the open run named `run` (execution name or ARN) to stop; returns its
    execution_arn, execution_name, source_id, status and who asked (the session's login, which
    the database records), or None if no open run without a cancel request has that name."""
    return fetch_one(
        cur,
        """
        UPDATE public.source_run
           SET cancel_requested_at = now(), cancel_reason = %(reason)s
         WHERE (execution_name = %(run)s OR execution_arn = %(run)s)
           AND status IN %(open)s AND cancel_requested_at IS NULL
        RETURNING execution_arn, execution_name, source_id, status, cancel_requested_by
        """,
        {"run": run, "reason": reason, "open": OPEN_RUN_STATUSES},
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
