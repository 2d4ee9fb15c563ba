"""Backfills in the database (migration 0014): a person's request and decisions, through the
database's functions (`request`, `decide`), which take the person from the login and refuse the
requester's own approval; the executions the scheduler starts for slices (`record_attempt`);
and what validation, the scheduler and `sourceflow backfill` read.

The rules — the slices of a range, where a backfill stands — are shared.rules.backfills'.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shared.rules.backfills import BackfillRange, BackfillStatus, SliceAttempt, SliceRun
from shared.store.approvals import refusable
from shared.store.db import fetch_one

DECISIONS = ("approved", "rejected", "cancelled", "retried")


def request(cur: Any, source_id: str, wanted: BackfillRange, *, reason: str) -> dict[str, Any]:
    """Ask for a backfill as the connected person; it is `active` at once, or
    `awaiting_approval` when its range is longer than the source's backfill_approval_days."""
    return refusable(
        cur,
        "SELECT * FROM public.backfill_request(%s, %s, %s, %s, %s, %s)",
        (
            source_id,
            wanted.field.value,
            wanted.start,
            wanted.end,
            wanted.slice_length,
            reason,
        ),
    )


def decide(cur: Any, backfill_id: int, decision: str, *, reason: str | None) -> dict[str, Any]:
    """A person's decision on a backfill, through the database's `backfill_decide`; returns the
    backfill as decided."""
    assert decision in DECISIONS
    return refusable(
        cur, "SELECT * FROM public.backfill_decide(%s, %s, %s)", (backfill_id, decision, reason)
    )


def find(cur: Any, backfill_id: int) -> dict[str, Any] | None:
    return fetch_one(cur, "SELECT * FROM public.backfill WHERE backfill_id = %s", (backfill_id,))


def listed(cur: Any, *, source_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Backfills, newest first."""
    cur.execute(
        """
        SELECT * FROM public.backfill
         WHERE %(source)s::text IS NULL OR source_id = %(source)s
         ORDER BY backfill_id DESC LIMIT %(limit)s
        """,
        {"source": source_id, "limit": limit},
    )
    return [dict(row) for row in cur.fetchall()]


def active_on_active_sources(cur: Any) -> list[dict[str, Any]]:
    """The active backfills of active sources, oldest first, with their source's lock."""
    cur.execute(
        """
        SELECT b.*, s.locked_by, s.lock_expires_at
          FROM public.backfill b JOIN public.source s USING (source_id)
         WHERE b.status = %s AND s.is_active
         ORDER BY b.backfill_id
        """,
        (BackfillStatus.ACTIVE.value,),
    )
    return [dict(row) for row in cur.fetchall()]


def attempts_of(cur: Any, backfill_ids: Sequence[int]) -> dict[int, list[SliceAttempt]]:
    """The executions started for each backfill's slices, with their runs' ledger status."""
    found: dict[int, list[SliceAttempt]] = {backfill_id: [] for backfill_id in backfill_ids}
    if not backfill_ids:
        return found
    cur.execute(
        """
        SELECT a.backfill_id, a.slice_number, a.attempt, a.execution_name, a.started_at,
               r.status AS run_status
          FROM public.backfill_slice_run a
          LEFT JOIN public.source_run r USING (execution_name)
         WHERE a.backfill_id = ANY(%s)
         ORDER BY a.backfill_id, a.slice_number, a.attempt
        """,
        (list(backfill_ids),),
    )
    for row in cur.fetchall():
        found[row["backfill_id"]].append(
            SliceAttempt(
                row["slice_number"],
                row["attempt"],
                row["execution_name"],
                row["started_at"],
                row["run_status"],
            )
        )
    return found


def record_attempt(
    cur: Any,
    *,
    backfill_id: int,
    slice_number: int,
    attempt: int,
    execution_name: str,
    started_at: datetime,
) -> bool:
    """Record the execution about to start for a slice; False if this attempt was already
    recorded (a concurrent or redelivered tick): then it starts nothing."""
    cur.execute(
        """
        INSERT INTO public.backfill_slice_run
            (execution_name, backfill_id, slice_number, attempt, started_at)
        VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT DO NOTHING
        """,
        (execution_name, backfill_id, slice_number, attempt, started_at),
    )
    return bool(cur.rowcount == 1)


def slice_of_execution(cur: Any, execution_name: str) -> SliceRun | None:
    """The backfill slice an execution was started for, if it was started for one."""
    row = fetch_one(
        cur,
        """
        SELECT b.*, a.slice_number
          FROM public.backfill_slice_run a JOIN public.backfill b USING (backfill_id)
         WHERE a.execution_name = %s
        """,
        (execution_name,),
    )
    if row is None:
        return None
    return SliceRun(
        row["backfill_id"],
        BackfillStatus(row["status"]),
        BackfillRange.of(row),
        row["slice_number"],
    )
