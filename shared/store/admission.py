"""The line of runs waiting to start (`public.run_admission`, migration 0015) and the count of
runs under way: what the scheduler admits runs by (shared/rules/admission.py).

A run is under way from its admission until its download is recorded — from then on it needs
no download worker: admitted and not yet recorded by validation, or recorded `running` and
holding its source's live lease (a run whose execution died stops counting when its lease
runs out). It does not count while it waits for a person to approve its Re-specs query (it
holds no worker then, and may wait a day). Runs started outside the scheduler count as soon as
they hold a lease.

Admission passes are serialised by a transaction-level advisory lock, so two scheduler
invocations never both see the same free place. The functions take the caller's cursor.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

from shared.rules.admission import WaitingRun
from shared.store.db import fetch_one
from shared.store.runs import RunStatus

# Any constant works; it only has to be the same for every scheduler invocation.
_ADMISSION_LOCK_KEY = 0x50F2


class RunKind(StrEnum):
    """Why a run waits (the column's CHECK constraint allows these)."""

    SCHEDULED = "scheduled"  # a due slot: a newer slot of the source takes its place
    REQUESTED = "requested"  # a Run Requested event: each waits for its own run
    BACKFILL = "backfill"  # a backfill's slice: each attempt waits for its own run


def queue_run(cur: Any, run: WaitingRun, kind: RunKind) -> None:
    """Put the run in the line, unless it is there already (a duplicate request). A source's
    newer slot takes the place, in the line, of its slot still waiting."""
    values = {
        "name": run.execution_name,
        "source_id": run.source_id,
        "kind": kind,
        "started_for": run.started_for,
        "nonce": run.nonce,
    }
    if kind is RunKind.SCHEDULED:
        cur.execute(
            """
            INSERT INTO public.run_admission (execution_name, source_id, kind, started_for, nonce)
            VALUES (%(name)s, %(source_id)s, %(kind)s, %(started_for)s, %(nonce)s)
            ON CONFLICT (source_id) WHERE admitted_at IS NULL AND kind = 'scheduled'
            DO UPDATE SET execution_name = EXCLUDED.execution_name,
                          started_for = EXCLUDED.started_for, nonce = EXCLUDED.nonce
            """,
            values,
        )
    else:
        cur.execute(
            """
            INSERT INTO public.run_admission (execution_name, source_id, kind, started_for, nonce)
            VALUES (%(name)s, %(source_id)s, %(kind)s, %(started_for)s, %(nonce)s)
            ON CONFLICT (execution_name) DO NOTHING
            """,
            values,
        )


def hold_the_line(cur: Any) -> None:
    """Take the admission lock until the transaction ends: one admission pass at a time."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ADMISSION_LOCK_KEY,))


def runs_under_way(cur: Any, *, validation_bound: timedelta) -> int:
    """Runs admitted and not yet recorded by validation (for at most `validation_bound`, the
    Validate task's timeout: a run not validated by then downloads nothing), plus recorded runs
    not yet downloaded that hold their source's live lease, except those waiting for a
    person."""
    row = fetch_one(
        cur,
        """
        SELECT (SELECT count(*) FROM public.run_admission q
                 WHERE q.admitted_at > now() - %(bound)s
                   AND NOT EXISTS (SELECT 1 FROM public.source_run r
                                    WHERE r.execution_arn = q.execution_arn))
             + (SELECT count(*) FROM public.source s
                  JOIN public.source_run r ON r.execution_arn = s.locked_by
                 WHERE s.locked_by IS NOT NULL AND s.lock_expires_at > now()
                   AND r.status = %(running)s
                   AND NOT EXISTS (SELECT 1 FROM public.run_approval a
                                    WHERE a.execution_arn = r.execution_arn
                                      AND a.status = 'waiting')) AS under_way
        """,
        {"bound": validation_bound, "running": RunStatus.RUNNING},
    )
    assert row is not None
    return int(row["under_way"])


def waiting_runs(cur: Any, *, limit: int) -> list[WaitingRun]:
    """The first `limit` runs in the line, oldest first."""
    cur.execute(
        """
        SELECT execution_name, source_id, started_for, nonce FROM public.run_admission
         WHERE admitted_at IS NULL
         ORDER BY queued_at, execution_name
         LIMIT %s
        """,
        (limit,),
    )
    return [WaitingRun(**row) for row in cur.fetchall()]


def waiting_sources(cur: Any) -> set[str]:
    """The sources with a run in the line."""
    cur.execute("SELECT DISTINCT source_id FROM public.run_admission WHERE admitted_at IS NULL")
    return {row["source_id"] for row in cur.fetchall()}


def mark_admitted(cur: Any, execution_name: str, execution_arn: str) -> None:
    cur.execute(
        "UPDATE public.run_admission SET admitted_at = now(), execution_arn = %s"
        " WHERE execution_name = %s AND admitted_at IS NULL",
        (execution_arn, execution_name),
    )


def requested_run(cur: Any, source_id: str, nonce: str) -> dict[str, Any] | None:
    """A requested run's place: its execution's name and ARN once admitted, or how many runs
    wait before it."""
    return fetch_one(
        cur,
        """
        SELECT q.execution_name, q.execution_arn, q.queued_at, q.admitted_at,
               (SELECT count(*) FROM public.run_admission w
                 WHERE w.admitted_at IS NULL AND q.admitted_at IS NULL
                   AND (w.queued_at, w.execution_name) < (q.queued_at, q.execution_name))
               AS waiting_before
          FROM public.run_admission q
         WHERE q.source_id = %s AND q.nonce = %s AND q.kind = %s
        """,
        (source_id, nonce, RunKind.REQUESTED),
    )


def line_length(cur: Any) -> dict[str, Any]:
    """How many runs wait for admission, and since when the oldest has."""
    row = fetch_one(
        cur,
        "SELECT count(*) AS waiting, min(queued_at) AS oldest_queued_at"
        " FROM public.run_admission WHERE admitted_at IS NULL",
    )
    assert row is not None
    return row
