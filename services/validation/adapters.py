"""Validation's SQL: the source row it locks and the ledger row it starts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from psycopg2.extras import Json

from services.validation.domain import Run, Skip
from shared.errors import PermanentError
from shared.store.db import fetch_one
from shared.store.ledger import set_flow_params
from shared.timefmt import isoformat


def find_run(cur: Any, execution_arn: str, *, for_update: bool = False) -> dict[str, Any] | None:
    return fetch_one(
        cur,
        "SELECT * FROM public.source_run WHERE execution_arn = %s"
        + (" FOR UPDATE" if for_update else ""),
        (execution_arn,),
    )


def read_source_row(cur: Any, source_id: str, *, for_update: bool = False) -> dict[str, Any] | None:
    # FOR UPDATE serialises concurrent validations of one source: the second sees the lock.
    return fetch_one(
        cur,
        """
        SELECT source_id, source_type, connection, is_active, batch_execution_params,
               last_modified_date, runtime_count, backdate_days, locked_by, lock_expires_at,
               lateness_allowance, landed_since
          FROM public.source WHERE source_id = %s
        """
        + (" FOR UPDATE" if for_update else ""),
        (source_id,),
    )


def record_skip(cur: Any, request: Mapping[str, Any], skip: Skip) -> None:
    cur.execute(
        """
        INSERT INTO public.source_run
            (execution_arn, execution_name, source_id, status, error, error_detail, finished_at)
        VALUES (%s, %s, %s, 'skipped', %s, %s, now())
        """,
        (
            request["execution_arn"],
            request["execution_name"],
            request["source_id"],
            skip.reason,
            skip.detail,
        ),
    )


def start_run(cur: Any, request: Mapping[str, Any], run: Run) -> None:
    source_id, execution_arn = request["source_id"], request["execution_arn"]
    cur.execute(
        """
        UPDATE public.source
           SET runtime_count = %(runtime_count)s,
               locked_by = %(arn)s, locked_at = now(), lock_expires_at = %(expires)s,
               updated_at = now()
         WHERE source_id = %(source_id)s
        """,
        {
            "runtime_count": run.runtime_count,
            "arn": execution_arn,
            "expires": run.lock_expires_at,
            "source_id": source_id,
        },
    )
    if run.params_to_write is not None:
        set_flow_params(
            cur,
            source_id,
            run.params_to_write,
            changed_by=f"validation:{request['execution_name']}",
            reason=f"first run (runtime count {run.runtime_count}) is backdated",
        )
    window = run.window
    cur.execute(
        """
        INSERT INTO public.source_run
            (execution_arn, execution_name, source_id, status, flow_type, flow_params,
             window_field, window_start, window_end, window_start_inclusive, runtime_count,
             cursor_before, lateness_allowance, started_at)
        SELECT %(arn)s, %(name)s, %(source_id)s, 'running', %(flow)s, %(params)s,
               %(field)s, %(start)s, %(end)s, %(inclusive)s, %(runtime_count)s,
               s.last_modified_date, s.lateness_allowance, %(end)s
          FROM public.source s WHERE s.source_id = %(source_id)s
        """,
        {
            "arn": execution_arn,
            "name": request["execution_name"],
            "source_id": source_id,
            "flow": run.params.flow_type.value,
            "params": Json(run.params.canonical()),
            "field": window.field.value,
            "start": window.start,
            "end": window.end,
            "inclusive": window.start_inclusive,
            "runtime_count": run.runtime_count,
        },
    )


def hold_lock_until(cur: Any, source_id: str, execution_arn: str, until: datetime) -> bool:
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


def result_fields(run: Mapping[str, Any]) -> dict[str, Any]:
    """The validation-result of a recorded run (the first delivery's decision, on a duplicate)."""
    base = {"source_id": run["source_id"], "execution_arn": run["execution_arn"]}
    if run["status"] == "skipped":
        return {**base, "decision": "skip", "reason": run["error"], "detail": run["error_detail"]}
    if run["flow_type"] is None:
        # An earlier delivery failed permanently and recorded why; report the same failure.
        raise PermanentError(run["error_detail"] or "validation failed", error_name=run["error"])
    plan: dict[str, Any] = {
        "flow_type": run["flow_type"],
        "window_field": run["window_field"],
        "window_start": isoformat(run["window_start"]),
        "window_end": isoformat(run["window_end"]),
        "window_start_inclusive": run["window_start_inclusive"],
    }
    if run["flow_params"] and run["flow_params"].get("sql"):
        plan["respecs_sql"] = run["flow_params"]["sql"]
    return {**base, "decision": "run", "plan": plan, "runtime_count": run["runtime_count"]}
