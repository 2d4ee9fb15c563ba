"""Unlocking's SQL: the run's final ledger status, the cursor, the lock."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.errors

from shared.errors import PermanentError
from shared.rules.versions import VERSION_COUNTS, landing_warnings
from shared.store.db import fetch_one
from shared.timefmt import isoformat


def lock_run_row(cur: Any, execution_arn: str) -> dict[str, Any] | None:
    return fetch_one(
        cur, "SELECT * FROM public.source_run WHERE execution_arn = %s FOR UPDATE", (execution_arn,)
    )


def lock_source_row(cur: Any, source_id: str) -> dict[str, Any] | None:
    return fetch_one(
        cur,
        """
        SELECT locked_by, last_modified_date, source_type, landed_since
          FROM public.source WHERE source_id = %s FOR UPDATE
        """,
        (source_id,),
    )


def release_lock(cur: Any, source_id: str, execution_arn: str) -> None:
    # The fence: only the holder's ARN matches, so someone else's lock is never released.
    cur.execute(
        """
        UPDATE public.source
           SET locked_by = NULL, locked_at = NULL, lock_expires_at = NULL, updated_at = now()
         WHERE source_id = %s AND locked_by = %s
        """,
        (source_id, execution_arn),
    )


def forget_landed(cur: Any, execution_arn: str) -> None:
    """A failed run landed nothing: its versions are not in the raw zone's runs."""
    cur.execute("DELETE FROM public.landed_version WHERE execution_arn = %s", (execution_arn,))


def keep_landed_since(cur: Any, source_id: str, landed_since: datetime | None) -> None:
    """Drop the landed versions that no later Normal window reads again (future-dated ones stay
    until a window reaches them), and the leftovers of runs that never succeeded."""
    cur.execute(
        "UPDATE public.source SET landed_since = %s WHERE source_id = %s",
        (landed_since, source_id),
    )
    cur.execute(
        """
        DELETE FROM public.landed_version v
         WHERE v.source_id = %(source_id)s
           AND (v.last_modified <= %(landed_since)s
                OR NOT EXISTS (SELECT 1 FROM public.source_run r
                                WHERE r.execution_arn = v.execution_arn
                                  AND r.status IN ('succeeded', 'running', 'downloaded')))
        """,
        {"source_id": source_id, "landed_since": landed_since},
    )


def insert_failed_run(cur: Any, request: Mapping[str, Any]) -> None:
    """A run that failed before validation recorded anything still gets its ledger row."""
    cur.execute(
        """
        INSERT INTO public.source_run (execution_arn, execution_name, source_id, status)
        VALUES (%s, %s, %s, 'running')
        ON CONFLICT (execution_arn) DO NOTHING
        """,
        (request["execution_arn"], request["execution_name"], request["source_id"]),
    )


def finish_failed(cur: Any, execution_arn: str, request: Mapping[str, Any]) -> dict[str, Any]:
    # The failing service wrote its own error detail; keep it, and fill in what is missing.
    cur.execute(
        """
        UPDATE public.source_run
           SET status = CASE WHEN cancel_requested_at IS NOT NULL OR %(error)s = 'RunCancelled'
                             THEN 'cancelled' ELSE 'failed' END,
               finished_at = now(),
               failed_step = COALESCE(failed_step, %(step)s),
               error = COALESCE(error, %(error)s),
               error_detail = COALESCE(error_detail, NULLIF(%(cause)s, ''))
         WHERE execution_arn = %(arn)s
        RETURNING *
        """,
        {
            "arn": execution_arn,
            "step": request["failed_step"],
            "error": request["failure"]["Error"],
            "cause": request["failure"].get("Cause", ""),
        },
    )
    return dict(cur.fetchone())


def finish_succeeded(
    cur: Any,
    source_id: str,
    execution_arn: str,
    cursor_before: datetime | None,
    cursor_after: datetime | None,
    respecs_rows: int | None,
) -> dict[str, Any]:
    """Move the cursor and end the run succeeded; returns the run's ledger row as it ended."""
    cur.execute(
        """
        UPDATE public.source SET last_modified_date = %s, updated_at = now()
         WHERE source_id = %s AND locked_by = %s
        """,
        (cursor_after, source_id, execution_arn),
    )
    cur.execute(
        """
        UPDATE public.source_run
           SET status = 'succeeded', finished_at = now(), cursor_before = %s, cursor_after = %s,
               respecs_rows = %s
         WHERE execution_arn = %s
        RETURNING *
        """,
        (cursor_before, cursor_after, respecs_rows, execution_arn),
    )
    return dict(cur.fetchone())


def apply_respecs(cur: Any, sql: str, statement_timeout_ms: int) -> int:
    """Run a checked Re-specs query in the caller's transaction; returns the rows it changed."""
    cur.execute("SET LOCAL statement_timeout = %s", (f"{statement_timeout_ms}ms",))
    try:
        cur.execute(sql)  # no parameters: psycopg2 leaves the text exactly as checked
    except psycopg2.errors.QueryCanceled as exc:
        raise PermanentError(
            f"the Re-specs query ran longer than {statement_timeout_ms} ms and was cancelled; "
            "narrow its WHERE clause or raise RESPECS_STATEMENT_TIMEOUT_MS",
            error_name="RespecsQueryTimedOut",
        ) from exc
    except (psycopg2.ProgrammingError, psycopg2.DataError, psycopg2.IntegrityError) as exc:
        raise PermanentError(
            f"the Re-specs query failed in PostgreSQL: {str(exc).strip()}",
            error_name="RespecsQueryFailed",
        ) from exc
    rows = int(cur.rowcount)
    cur.execute("SET LOCAL statement_timeout = 0")
    return rows


def result_fields(run: Mapping[str, Any], *, lock_released: bool) -> dict[str, Any]:
    def stamp(value: datetime | None) -> str | None:
        return isoformat(value) if value else None

    fields = {
        "source_id": run["source_id"],
        "execution_arn": run["execution_arn"],
        "status": run["status"],
        "lock_released": lock_released,
        "cursor_before": stamp(run["cursor_before"]),
        "cursor_after": stamp(run["cursor_after"]),
        "flow_type": run["flow_type"],
        "error_detail": run["error_detail"] if run["status"] in ("failed", "cancelled") else None,
    }
    if run["status"] == "succeeded":
        # For the Run Succeeded event, which the state machine builds from this result.
        fields.update({count: run[count] or 0 for count in VERSION_COUNTS})
        fields["warnings"] = landing_warnings(run["future_records"] or 0)
    return fields
