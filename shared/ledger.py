"""Run-ledger writes that every service makes the same way.

The ledger (`public.source_run`) is where an operator reads what happened to a run; the
state machine only carries error names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg2.extras import Json

from shared.db import Database


def failure_recorder(db: Database, step: str) -> Any:
    """A `FailureRecorder` that writes a step's failure detail into the execution's ledger row.

    The row may not exist yet (validation failed before recording anything), so it is created;
    a row that already ended keeps its outcome.
    """

    def record(message: Mapping[str, Any], error_name: str, detail: str) -> None:
        with db.transaction() as cur:
            cur.execute(
                """
                INSERT INTO public.source_run
                    (execution_arn, execution_name, source_id, status,
                     failed_step, error, error_detail)
                VALUES (%(arn)s, %(name)s, %(source_id)s, 'running',
                        %(step)s, %(error)s, %(detail)s)
                ON CONFLICT (execution_arn) DO UPDATE
                   SET failed_step = EXCLUDED.failed_step,
                       error = EXCLUDED.error,
                       error_detail = EXCLUDED.error_detail
                 WHERE source_run.status IN ('running', 'downloaded')
                """,
                {
                    "arn": message["execution_arn"],
                    "name": message["execution_name"],
                    "source_id": message["source_id"],
                    "step": step,
                    "error": error_name,
                    "detail": detail,
                },
            )

    return record


def set_flow_params(
    cur: Any,
    source_id: str,
    to_params: Mapping[str, Any] | None,
    *,
    changed_by: str,
    reason: str,
    expected: Mapping[str, Any] | None = None,
    check_expected: bool = False,
) -> bool:
    """Change a source's `batch_execution_params` and record it in the flow history.

    With `check_expected`, the change applies only if the params are still `expected`
    (compare-and-set: a decision made on stale params loses to an operator's edit).
    Returns whether the change was applied.
    """
    condition = (
        "AND batch_execution_params IS NOT DISTINCT FROM %(expected)s" if check_expected else ""
    )
    cur.execute(
        f"""
        WITH old AS (
            SELECT source_id, batch_execution_params FROM public.source
             WHERE source_id = %(source_id)s {condition} FOR UPDATE
        ), changed AS (
            UPDATE public.source s SET batch_execution_params = %(to)s, updated_at = now()
              FROM old WHERE s.source_id = old.source_id
            RETURNING s.source_id
        )
        INSERT INTO public.source_flow_history
            (source_id, from_params, to_params, changed_by, reason)
        SELECT old.source_id, old.batch_execution_params, %(to)s, %(by)s, %(reason)s FROM old
        RETURNING change_id
        """,
        {
            "source_id": source_id,
            "expected": Json(expected) if expected is not None else None,
            "to": Json(to_params) if to_params is not None else None,
            "by": changed_by,
            "reason": reason,
        },
    )
    return cur.fetchone() is not None
