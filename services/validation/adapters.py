"""Validation's SQL: the source row it reads and locks (through `shared.store.runs`), the
ledger row it starts or skips, and the decision a recorded run stands for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.validation.domain import Run, Skip
from shared.errors import PermanentError
from shared.store import runs
from shared.store.db import fetch_one
from shared.store.ledger import set_flow_params
from shared.store.runs import RunStatus
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
    runs.skip_run(cur, request, reason=skip.reason, detail=skip.detail)


def start_run(cur: Any, request: Mapping[str, Any], run: Run) -> None:
    source_id, execution_arn = request["source_id"], request["execution_arn"]
    runs.take_lock(
        cur,
        source_id,
        execution_arn,
        runtime_count=run.runtime_count,
        expires_at=run.lock_expires_at,
    )
    if run.params_to_write is not None:
        set_flow_params(
            cur,
            source_id,
            run.params_to_write,
            reason=(
                f"first run (runtime count {run.runtime_count}) is backdated:"
                f" {request['execution_name']}"
            ),
        )
    runs.start_run(
        cur,
        request,
        flow_type=run.params.flow_type.value,
        flow_params=run.params.canonical(),
        window=run.window,
        runtime_count=run.runtime_count,
    )


def result_fields(run: Mapping[str, Any]) -> dict[str, Any]:
    """The validation-result of a recorded run (the first delivery's decision, on a duplicate)."""
    base = {"source_id": run["source_id"], "execution_arn": run["execution_arn"]}
    if run["status"] == RunStatus.SKIPPED:
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
