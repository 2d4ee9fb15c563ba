"""Unlocking: end a run. On success move the cursor and release the lock; on failure release
the lock and record why. Both happen in one transaction with the ledger's final status, and
only for the execution that holds the lock (the fence): a late or duplicate unlock changes
nothing it does not own.

This module orchestrates one message, its ports passed in as arguments; the decisions are
services.unlocking.domain's, the SQL services.unlocking.adapters'.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from services.unlocking import adapters
from services.unlocking.domain import check_success, cursor_move, holds_lock
from services.unlocking.metrics import RunEnded, publish_run_metrics
from shared.rules.flows import FlowType
from shared.rules.respecs import check_respecs_query, check_server_major
from shared.runtime.observability import logger
from shared.runtime.redaction import error_text
from shared.runtime.settings import RespecsSettings
from shared.store import runs
from shared.store.db import Database
from shared.store.runs import OPEN_RUN_STATUSES


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
    run = adapters.lock_run_row(cur, request["execution_arn"])
    if run is not None and run["status"] not in OPEN_RUN_STATUSES:
        return adapters.result_fields(run, lock_released=False), None  # a duplicate: done
    source = adapters.lock_source_row(cur, request["source_id"])
    if request["outcome"] == "failed":
        return _end_failed(cur, request, run, source)
    return _end_succeeded(cur, request, run, source, respecs)


def _end_failed(
    cur: Any,
    request: Mapping[str, Any],
    run: Mapping[str, Any] | None,
    source: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], RunEnded]:
    """Release the lock if the run's execution holds it, and record why the run failed."""
    execution_arn, source_id = request["execution_arn"], request["source_id"]
    lock_released = holds_lock(source, execution_arn)
    if run is None:
        runs.open_run(cur, request)
    if lock_released:
        runs.release_lock(cur, source_id, execution_arn)
    adapters.forget_landed(cur, execution_arn)
    ended = runs.fail_run(
        cur,
        execution_arn,
        failed_step=request["failed_step"],
        error=request["failure"]["Error"],
        # Our tasks' causes were cleaned when they were sent; Step Functions' own are cleaned
        # here, as every error text that leaves a service is (shared.runtime.redaction). A
        # cause may be absent or null (the emulator drops a SendTaskFailure's).
        cause=error_text(request["failure"].get("Cause") or ""),
    )
    return (
        adapters.result_fields(ended, lock_released=lock_released),
        RunEnded.of(ended, source["source_type"] if source is not None else None),
    )


def _end_succeeded(
    cur: Any,
    request: Mapping[str, Any],
    run: Mapping[str, Any] | None,
    source: Mapping[str, Any] | None,
    respecs: RespecsSettings,
) -> tuple[dict[str, Any], RunEnded]:
    """Apply a Re-specs query, move the cursor and release the lock, all or nothing."""
    execution_arn, source_id = request["execution_arn"], request["source_id"]
    check_success(run, source, source_id=source_id, execution_arn=execution_arn)
    assert run is not None and source is not None  # check_success raised otherwise
    respecs_rows = None
    if FlowType(run["flow_type"]) is FlowType.RESPECS:
        # Checked again: the allow-list may have shrunk since validation, and the check holds
        # only for the server's grammar. A refused or failing query rolls back this whole
        # transaction, cursor and lock included.
        check_server_major(adapters.server_version(cur))
        query = check_respecs_query(source_id, run["flow_params"]["sql"], respecs.allowed_tables)
        respecs_rows = adapters.apply_respecs(cur, query.sql, respecs.statement_timeout_ms)
    cursor = cursor_move(run, source)
    succeeded = runs.finish_run(
        cur,
        source_id,
        execution_arn,
        cursor_before=cursor.before,
        cursor_after=cursor.after,
        respecs_rows=respecs_rows,
    )
    if cursor.moves:
        adapters.keep_landed_since(cur, source_id, cursor.landed_since)
    if succeeded["future_records"]:
        logger.warning(
            "run succeeded with records stamped in the future",
            extra={"future_records": succeeded["future_records"], "source_id": source_id},
        )
    runs.release_lock(cur, source_id, execution_arn)
    return (
        adapters.result_fields(succeeded, lock_released=True),
        RunEnded.of(succeeded, source["source_type"]),
    )
