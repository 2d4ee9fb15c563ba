"""`sourceflow redrive RUN`: run a failed run again, once, and record which run redrove it.

How (`redrive_choice`):
- A run the ledger records as failed went through the run's own failure path: unlocked, its
  failure recorded, people alerted, and its execution ended at a Fail state. Step Functions'
  RedriveExecution continues an execution from its unsuccessful state, which is that Fail
  state: it would fail again at once. So a new run is started over the failed run's window,
  with its flow (validation reads them from the ledger of redrives, shared/store/redrives.py).
- A run the ledger still records as under way, whose execution ended (failed, timed out or was
  aborted) before the failure path ran, was cut off in a step: RedriveExecution continues it
  from that step, as the same execution, which still owns its lock. An engine without
  RedriveExecution (the local emulator, LOCAL_EMULATOR.md) answers with an error of its own;
  then a new run is started instead.
- A run that succeeded, was skipped or cancelled, is still running, or was redriven already, is
  refused, saying why; so is one that failed in Validate, before it had a window. A backfill's
  slice is retried by its backfill (`sourceflow backfill retry`).

Who may redrive: any person (their login is recorded, migration 0023's trigger), without a
second person. The second-person rule (DESIGN.md) guards a Re-specs query, a change to data;
a redrive runs again what already ran with the same window and flow, as `sourceflow run` asks
for a run, and a redriven Re-specs run waits for a second person's approval again.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ops.config import OperatorError
from ops.run_view import unknown_run
from shared.rules.redrives import RedriveHow
from shared.runtime.aws import error_code
from shared.runtime.executions import execution_arn, execution_name, start_named_run
from shared.store import redrives
from shared.store.db import Database, fetch_one
from shared.store.runs import RunStatus

# How an execution that ended before its run's failure path ran may have ended.
CUT_OFF = ("FAILED", "TIMED_OUT", "ABORTED")

_FAILED_RUN_QUERY = """
SELECT r.execution_name, r.execution_arn, r.source_id, r.status, r.window_field, b.backfill_id
  FROM public.source_run r
  LEFT JOIN public.backfill_slice_run b USING (execution_name)
 WHERE r.execution_name = %(run)s OR r.execution_arn = %(run)s
"""

_RUN_BY_NAME = "SELECT 1 AS found FROM public.source_run WHERE execution_name = %s"


def redrive_choice(run: str, ledger_status: str, execution_status: str | None) -> RedriveHow:
    """How RUN is redriven, from its status in the ledger and, for a run the ledger records as
    under way, its execution's; OperatorError when it may not be."""
    if ledger_status == RunStatus.FAILED:
        return RedriveHow.NEW_RUN
    if ledger_status in (RunStatus.RUNNING, RunStatus.DOWNLOADED):
        if execution_status in CUT_OFF:
            return RedriveHow.REDRIVE_EXECUTION
        raise OperatorError(
            f"run {run!r} is still {execution_status or ledger_status.lower()}; only a failed "
            f"run is redriven (`sourceflow run watch {run}` follows it, `sourceflow cancel` "
            "stops it)"
        )
    raise OperatorError(
        f"run {run!r} did not fail (its status: {ledger_status}); only a failed run is redriven "
        "(`sourceflow run SOURCE` asks for a new run)"
    )


def engine_lacks_redrive(exc: ClientError) -> bool:
    """The engine has no RedriveExecution: the local emulator answers it with an HTTP 500 page,
    which botocore reports with the bare status as the code. AWS answers every error of this
    API with a named code (ExecutionNotRedrivable, ExecutionDoesNotExist, ...)."""
    return exc.operation_name == "RedriveExecution" and error_code(exc) == "500"


def redrive_execution_or_new_run(sfn: Any, failed: Mapping[str, Any]) -> RedriveHow:
    """Redrive the failed run's execution if it was cut off in a step and the engine can;
    returns how the run is redriven (NEW_RUN: a new run is to be started)."""
    execution_status = None
    if failed["status"] != RunStatus.FAILED:
        execution_status = sfn.describe_execution(executionArn=failed["execution_arn"])["status"]
    how = redrive_choice(failed["execution_name"], failed["status"], execution_status)
    if how is RedriveHow.NEW_RUN:
        return how
    try:
        sfn.redrive_execution(executionArn=failed["execution_arn"])
    except ClientError as exc:
        if engine_lacks_redrive(exc):
            return RedriveHow.NEW_RUN
        raise OperatorError(
            f"Step Functions refused to redrive {failed['execution_name']}: {exc}"
        ) from None
    return how


def redrive_run(db: Database, sfn: Any, state_machine_arn: str, run: str) -> dict[str, Any]:
    """Redrive RUN (its execution name or ARN); returns what was done."""
    with db.transaction() as cur:
        failed = fetch_one(cur, _FAILED_RUN_QUERY, {"run": run})
        earlier = redrives.redrive_of(cur, failed["execution_arn"]) if failed else None
    if failed is None:
        raise unknown_run(run)
    if failed["backfill_id"] is not None:
        raise OperatorError(
            f"run {run!r} is a slice of backfill {failed['backfill_id']}, which retries its own "
            f"slices: `sourceflow backfill retry {failed['backfill_id']}`"
        )
    if failed["window_field"] is None:
        raise OperatorError(
            f"run {run!r} failed in Validate, before it had a window to load again: fix what "
            f"its error says, then `sourceflow run {failed['source_id']}` asks for a new run"
        )
    if earlier is not None:
        return _resume(db, sfn, state_machine_arn, failed, earlier)
    how = redrive_execution_or_new_run(sfn, failed)
    if how is RedriveHow.REDRIVE_EXECUTION:
        return _record(db, failed, failed["execution_name"], how)
    name = execution_name(failed["source_id"], datetime.now(UTC), "rd" + secrets.token_hex(4))
    # Recorded first, so that validation finds the window the new run is for.
    done = _record(db, failed, name, how)
    _start(sfn, state_machine_arn, failed, name)
    return done


def _record(db: Database, failed: dict[str, Any], name: str, how: RedriveHow) -> dict[str, Any]:
    with db.transaction() as cur:
        if not redrives.record(cur, failed["execution_arn"], name, how):
            earlier = redrives.redrive_of(cur, failed["execution_arn"])
            assert earlier is not None
            raise _already(failed, earlier)
        recorded = redrives.redrive_of(cur, failed["execution_arn"])
    assert recorded is not None
    return _said(failed, recorded)


def _resume(
    db: Database, sfn: Any, state_machine_arn: str, failed: dict[str, Any], earlier: dict[str, Any]
) -> dict[str, Any]:
    """A redrive whose new run was recorded and never started (its start failed) starts it;
    any other redrive recorded is a refusal."""
    name = earlier["redrive_execution_name"]
    if earlier["how"] != RedriveHow.NEW_RUN or _started(db, sfn, state_machine_arn, name):
        raise _already(failed, earlier)
    _start(sfn, state_machine_arn, failed, name)
    return _said(failed, earlier)


def _started(db: Database, sfn: Any, state_machine_arn: str, name: str) -> bool:
    """Whether the execution `name` was started: validation recorded it, or Step Functions
    knows it."""
    with db.transaction() as cur:
        if fetch_one(cur, _RUN_BY_NAME, (name,)) is not None:
            return True
    try:
        sfn.describe_execution(executionArn=execution_arn(state_machine_arn, name))
    except ClientError as exc:
        if error_code(exc) == "ExecutionDoesNotExist":
            return False
        raise
    return True


def _start(sfn: Any, state_machine_arn: str, failed: dict[str, Any], name: str) -> None:
    try:
        start_named_run(sfn, state_machine_arn, failed["source_id"], name)
    except ClientError as exc:
        raise OperatorError(
            f"the redrive of {failed['execution_name']} is recorded as {name}, whose execution "
            f"did not start ({exc}); run `sourceflow redrive {failed['execution_name']}` again "
            "to start it"
        ) from None


def _already(failed: dict[str, Any], earlier: dict[str, Any]) -> OperatorError:
    return OperatorError(
        f"run {failed['execution_name']!r} was redriven already by {earlier['redriven_by']}, "
        f"as {earlier['redrive_execution_name']} ({earlier['how']}); a run is redriven once: "
        f"`sourceflow runs show {earlier['redrive_execution_name']}` shows how that went"
    )


def _said(failed: dict[str, Any], recorded: dict[str, Any]) -> dict[str, Any]:
    return {
        "failed_run": failed["execution_name"],
        "source_id": failed["source_id"],
        "how": recorded["how"],
        "redrive_run": recorded["redrive_execution_name"],
        "redriven_by": recorded["redriven_by"],
        "redriven_at": recorded["redriven_at"],
    }
