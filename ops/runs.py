"""Following executions to their end, for the demo, the CLI and the tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ops.approvals import STEP as APPROVE_STEP
from ops.approvals import cancel_waiting
from ops.config import OperatorConfig, OperatorError, unknown_source
from ops.output import cell
from ops.run_view import StepStatus, StepVisit, execution_history, step_visits
from shared.runtime import executions
from shared.runtime.catalogue import Step
from shared.runtime.events import EventPublisher
from shared.runtime.executions import RunRequest, requested_run_nonce
from shared.runtime.tasks import TaskCallbacks
from shared.store import admission, runs
from shared.store.db import Database, session_login
from shared.store.runs import RunStatus
from shared.store.sources import get_run, get_source


class ExecutionStillRunning(RuntimeError):
    pass


def wait_for_execution(
    sfn_client: Any, execution_arn: str, timeout: float = 120.0
) -> dict[str, Any]:
    """Poll until the execution ends; returns DescribeExecution's answer."""
    deadline = time.monotonic() + timeout
    while True:
        described: dict[str, Any] = sfn_client.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        if time.monotonic() > deadline:
            raise ExecutionStillRunning(f"{execution_arn} still running after {timeout:.0f}s")
        time.sleep(0.1)


# `sourceflow run --wait`: how long to wait for the scheduler to take the request, then how
# often to look at the execution and how long at most (also how long a place in the line of
# runs waiting for admission may stay where it is).
REQUESTED_EXECUTION_TIMEOUT_SECONDS = 60.0
FOLLOW_POLL_SECONDS = 0.5
FOLLOW_TIMEOUT_SECONDS = 3600.0


def runs_list(
    db: Database,
    *,
    source_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute(
            """
            SELECT r.execution_name, r.source_id, r.flow_type, r.status, r.window_field,
                   r.window_start, r.window_end, r.lateness_allowance, r.records,
                   r.late_records, r.duplicates_skipped, r.future_records, r.bytes,
                   r.respecs_rows, r.download_invocations, r.started_at, r.finished_at,
                   EXTRACT(EPOCH FROM r.finished_at - r.started_at) AS duration_seconds,
                   r.failed_step, r.error, r.error_detail, r.execution_arn,
                   b.backfill_id, b.slice_number
              FROM public.source_run r
              LEFT JOIN public.backfill_slice_run b USING (execution_name)
             WHERE (%(source)s::text IS NULL OR r.source_id = %(source)s)
               AND (%(status)s::text IS NULL OR r.status = %(status)s)
               AND (%(since)s::timestamptz IS NULL OR r.started_at >= %(since)s)
             ORDER BY r.started_at DESC LIMIT %(limit)s
            """,
            {"source": source_id, "status": status, "since": since, "limit": limit},
        )
        rows = [dict(row) for row in cur.fetchall()]
    for row in rows:
        if row["duration_seconds"] is not None:
            row["duration_seconds"] = round(float(row["duration_seconds"]), 3)
        # A backfill's slice: its window is [window_start, window_end).
        row["backfill"] = (
            f"{row['backfill_id']} slice {row['slice_number']}" if row["backfill_id"] else None
        )
    return rows


def cancel_run(db: Database, callbacks: TaskCallbacks, run: str, *, reason: str) -> dict[str, Any]:
    """Ask a running run to stop. The step in progress notices (a download at its next
    heartbeat; a wait for approval at once), stops, and the run ends `cancelled`: source
    unlocked, cursor unchanged."""
    with db.transaction() as cur:
        row = runs.request_cancel(cur, run, reason=reason)
        if row is not None:
            cancel_waiting(cur, callbacks, row["execution_arn"], reason=reason)
        else:
            cur.execute(
                "SELECT status, cancel_requested_by FROM public.source_run"
                " WHERE execution_name = %(run)s OR execution_arn = %(run)s",
                {"run": run},
            )
            found = cur.fetchone()
    if row is not None:
        return row
    if found is None:
        raise OperatorError(
            f"no run {run!r} in the ledger (it may not have been validated yet); "
            "`sourceflow runs --status running` lists running runs"
        )
    if found["cancel_requested_by"]:
        raise OperatorError(
            f"run {run!r} is already being cancelled by {found['cancel_requested_by']}"
        )
    raise OperatorError(f"run {run!r} has already ended ({found['status']}); nothing to cancel")


def request_run(config: OperatorConfig, db: Database, source_id: str) -> RunRequest:
    """Publish `Run Requested` by the connected person; returns the event's id and the name of
    the execution the scheduler starts for it."""
    source = get_source(db, source_id)
    if source is None:
        raise unknown_source(source_id)
    if source["deleted_at"] is not None:
        raise OperatorError(f"source {source_id!r} was deleted; it runs no more")
    with db.transaction() as cur:
        requested_by = session_login(cur)
    return executions.request_run(
        EventPublisher(config.client("events"), config.require("EVENT_BUS_NAME")),
        db,
        source_id,
        requested_by=requested_by,
        reason="sourceflow run",
        correlation_id=f"{source_id}-operator",
    )


def find_requested_execution(
    db: Database, source_id: str, event_id: str, *, waiting: Callable[[int], None]
) -> str:
    """The execution the scheduler started for this request (named after the event), once
    admission started it; until then `waiting` hears how many runs wait before it, each time
    that changes. A request the scheduler has not put in the line within
    REQUESTED_EXECUTION_TIMEOUT_SECONDS, or one whose place has not moved in
    FOLLOW_TIMEOUT_SECONDS, is reported."""
    nonce = requested_run_nonce(event_id)
    deadline = time.monotonic() + REQUESTED_EXECUTION_TIMEOUT_SECONDS
    before = None
    while True:
        with db.transaction() as cur:
            place = admission.requested_run(cur, source_id, nonce)
        if place is not None and place["execution_arn"]:
            return str(place["execution_arn"])
        if place is not None and place["waiting_before"] != before:
            before = place["waiting_before"]
            waiting(before)
            deadline = time.monotonic() + FOLLOW_TIMEOUT_SECONDS
        if time.monotonic() > deadline:
            raise OperatorError(
                f"no execution started for the run request of {source_id!r}"
                + (f"; {before} runs still wait before it" if place else "")
                + "; is the scheduler running? `sourceflow status` shows its queue, the runs "
                "waiting for admission and its last tick"
            )
        time.sleep(0.3)


@dataclass(frozen=True)
class Progress:
    """One line of a run followed live."""

    at: datetime
    step: str
    detail: str


def follow_execution(sfn: Any, db: Database, execution_arn: str) -> Iterator[Progress]:
    """Each step as the execution starts it and as it ends, the download's progress while it
    runs, then the outcome; ends when the execution does."""
    shown: list[StepVisit] = []  # the steps as last said
    last_records = None
    deadline = time.monotonic() + FOLLOW_TIMEOUT_SECONDS
    while True:
        visits = step_visits(execution_history(sfn, execution_arn), ())
        for index, visit in enumerate(visits):
            if index >= len(shown) or shown[index].status != visit.status:
                yield _step_progress(visit, execution_arn)
        shown = visits
        described = sfn.describe_execution(executionArn=execution_arn)
        run = get_run(db, execution_arn)
        progress = (run or {}).get("progress_records")
        if run and run["status"] == RunStatus.RUNNING and progress not in (None, last_records):
            last_records = progress
            yield Progress(datetime.now(UTC), Step.DOWNLOAD, _download_progress(run))
        if described["status"] != "RUNNING":
            yield Progress(
                described.get("stopDate") or datetime.now(UTC),
                _final_state(described, run),
                _outcome(described, run),
            )
            return
        if time.monotonic() > deadline:
            raise OperatorError(
                f"{execution_arn} still running after {FOLLOW_TIMEOUT_SECONDS:.0f}s"
            )
        time.sleep(FOLLOW_POLL_SECONDS)


def _step_progress(visit: StepVisit, execution_arn: str) -> Progress:
    """A step started (with what a person must do for it, if anything), or how it ended."""
    if visit.status is StepStatus.IN_PROGRESS:
        assert visit.started_at is not None
        hint = _waiting_hint(visit.step, execution_arn)
        return Progress(visit.started_at, visit.step, hint or "started")
    assert visit.ended_at is not None
    error = f": {visit.error}" if visit.error else ""
    return Progress(visit.ended_at, visit.step, f"{visit.status}{error}")


def _waiting_hint(state: str, execution_arn: str) -> str:
    """What a person must do for a state that waits for one."""
    if state != APPROVE_STEP:
        return ""
    run = execution_arn.rsplit(":", 1)[1]
    return (
        f"waiting for a second person: `sourceflow approve {run}` or "
        f"`sourceflow reject {run} --reason …`"
    )


def _download_progress(run: Mapping[str, Any]) -> str:
    """Records as the heartbeats count them; bytes once a part is written (they are counted
    as parts are, so a first part still being filled has records and no bytes yet)."""
    written = f", {run['progress_bytes']} bytes written" if run["progress_bytes"] else ""
    return f"{run['progress_records']} records{written} so far"


def _skipped(described: Mapping[str, Any], run: Mapping[str, Any] | None) -> bool:
    """The execution succeeded without running: validation skipped it (a locked or disabled
    source, …) and said why in the ledger."""
    return (
        described["status"] == "SUCCEEDED"
        and run is not None
        and run["status"] == RunStatus.SKIPPED
    )


def _final_state(described: Mapping[str, Any], run: Mapping[str, Any] | None) -> str:
    """The execution's status, or SKIPPED for a run skipped (it did nothing, on purpose)."""
    return "SKIPPED" if _skipped(described, run) else str(described["status"])


def _outcome(described: Mapping[str, Any], run: Mapping[str, Any] | None) -> str:
    if run and _skipped(described, run):
        return f"{run['error']}: {run['error_detail']}"
    if described["status"] == "SUCCEEDED":
        if run:
            return (
                f"{run['records']} records, cursor {cell(run['cursor_before']) or 'none'} → "
                f"{cell(run['cursor_after']) or 'none'}"
            )
        return RunStatus.SUCCEEDED
    error = (run or {}).get("error") or described.get("error")
    detail = (run or {}).get("error_detail") or described.get("cause") or ""
    return f"{error} in {(run or {}).get('failed_step')}: {detail}".strip()
