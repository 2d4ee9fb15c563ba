"""Unlocking: end a run. On success move the cursor and release the lock; on failure release
the lock and record why. Both happen in one transaction with the ledger's final status, and
only for the execution that holds the lock (the fence): a late or duplicate unlock changes
nothing it does not own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from services.unlocking import adapters
from services.unlocking.metrics import RunEnded, publish_run_metrics
from shared.errors import LockLost, PermanentError
from shared.rules.flows import (
    FlowType,
    advance_cursor,
    landed_since_after,
    moves_cursor,
    recorded_allowance,
)
from shared.rules.respecs import check_respecs_query
from shared.runtime.observability import logger
from shared.runtime.settings import RespecsSettings
from shared.store import runs
from shared.store.db import Database
from shared.store.runs import OPEN_RUN_STATUSES, RunStatus


class RunNotDownloaded(PermanentError):
    error_name = "RunNotDownloaded"


def unlock_run(
    request: Mapping[str, Any],
    *,
    db: Database,
    respecs: RespecsSettings,
    on_run_ended: Callable[[RunEnded], None] = publish_run_metrics,
) -> dict[str, Any]:
    """Returns the fields of an unlocking-result message. A run this call ended (not a
    duplicate's) is reported to `on_run_ended` once its transaction has committed."""
    with db.transaction() as cur:
        result, ended = _unlock(cur, request, respecs)
    if ended is not None:
        on_run_ended(ended)
    return result


def _unlock(
    cur: Any, request: Mapping[str, Any], respecs: RespecsSettings
) -> tuple[dict[str, Any], RunEnded | None]:
    """The unlock, in the caller's transaction: the result fields, and the run it ended (None
    when a duplicate finds the run already ended)."""
    execution_arn, source_id = request["execution_arn"], request["source_id"]
    run = adapters.lock_run_row(cur, execution_arn)
    if run is not None and run["status"] not in OPEN_RUN_STATUSES:
        return adapters.result_fields(run, lock_released=False), None  # a duplicate: done
    source = adapters.lock_source_row(cur, source_id)
    holds_lock = source is not None and source["locked_by"] == execution_arn
    source_type = source["source_type"] if source is not None else None

    if request["outcome"] == "failed":
        if run is None:
            runs.open_run(cur, request)
        if holds_lock:
            runs.release_lock(cur, source_id, execution_arn)
        adapters.forget_landed(cur, execution_arn)
        ended = runs.fail_run(
            cur,
            execution_arn,
            failed_step=request["failed_step"],
            error=request["failure"]["Error"],
            cause=request["failure"].get("Cause", ""),
        )
        return (
            adapters.result_fields(ended, lock_released=holds_lock),
            RunEnded.of(ended, source_type),
        )

    if run is None or run["status"] != RunStatus.DOWNLOADED:
        raise RunNotDownloaded(
            f"execution {execution_arn} reported success but its run is "
            f"{run['status'] if run else 'missing'!r} in the ledger, not 'downloaded'"
        )
    if not holds_lock:
        raise LockLost(
            f"source {source_id!r} is locked by {source['locked_by'] if source else None}, "
            f"not by {execution_arn}; the cursor is not moved"
        )
    assert source is not None
    flow_type = FlowType(run["flow_type"])
    respecs_rows = None
    if flow_type is FlowType.RESPECS:
        # Checked again: the allow-list may have shrunk since validation. A refused or
        # failing query rolls back this whole transaction, cursor and lock included.
        query = check_respecs_query(source_id, run["flow_params"]["sql"], respecs.allowed_tables)
        respecs_rows = adapters.apply_respecs(cur, query.sql, respecs.statement_timeout_ms)
    cursor_before = source["last_modified_date"]
    cursor_after = (
        advance_cursor(cursor_before, run["max_last_modified"])
        if moves_cursor(flow_type)
        else cursor_before
    )
    succeeded = runs.finish_run(
        cur,
        source_id,
        execution_arn,
        cursor_before=cursor_before,
        cursor_after=cursor_after,
        respecs_rows=respecs_rows,
    )
    if moves_cursor(flow_type):
        landed_since = landed_since_after(
            source["landed_since"],
            cursor_after,
            recorded_allowance(run["lateness_allowance"]),
        )
        adapters.keep_landed_since(cur, source_id, landed_since)
    if succeeded["future_records"]:
        logger.warning(
            "run succeeded with records stamped in the future",
            extra={"future_records": succeeded["future_records"], "source_id": source_id},
        )
    runs.release_lock(cur, source_id, execution_arn)
    return (
        adapters.result_fields(succeeded, lock_released=True),
        RunEnded.of(succeeded, source_type),
    )
