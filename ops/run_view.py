"""One run seen whole, for `sourceflow runs show` and `sourceflow run watch`: its steps from the
execution's history read against its state machine's definition, and what the database knows of
it (the ledger's counters, the window and cursor, who asked, approved and cancelled)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from ops.config import OperatorConfig, OperatorError
from shared.errors import RunCancelled
from shared.rules.redrives import RedriveHow
from shared.store import redrives
from shared.store.db import Database, fetch_one
from shared.timefmt import isoformat


class StepStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    IN_PROGRESS = "in progress"
    NOT_REACHED = "not reached"


@dataclass(frozen=True)
class StepVisit:
    """One time the execution was in a state (a state entered twice is two visits), or a state
    of the flow's path it has not reached."""

    step: str
    status: StepStatus
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    cause: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": str(self.status)}


# History events that say the state in progress failed, and where their details are.
_STEP_FAILURES = {
    "TaskFailed": "taskFailedEventDetails",
    "TaskTimedOut": "taskTimedOutEventDetails",
    "TaskStartFailed": "taskStartFailedEventDetails",
    "TaskSubmitFailed": "taskSubmitFailedEventDetails",
}
# How an execution ends, and the details each end carries.
_EXECUTION_ENDS = {
    "ExecutionSucceeded": ("executionSucceededEventDetails", StepStatus.SUCCEEDED),
    "ExecutionFailed": ("executionFailedEventDetails", StepStatus.FAILED),
    "ExecutionTimedOut": ("executionTimedOutEventDetails", StepStatus.FAILED),
    "ExecutionAborted": ("executionAbortedEventDetails", StepStatus.CANCELLED),
}


def main_path(definition: Mapping[str, Any]) -> list[str]:
    """The states a run goes through when nothing goes wrong: from StartAt, each state's Next
    (a Choice's Default) to the end. What a run has not reached yet is on it."""
    states, path = definition["States"], []
    state = definition.get("StartAt")
    while state is not None and state in states and state not in path:
        path.append(state)
        state = states[state].get("Next") or states[state].get("Default")
    return path


def step_visits(events: Iterable[Mapping[str, Any]], path: Sequence[str]) -> list[StepVisit]:
    """Each state the execution entered, in order, with how it went: a state left after a
    task's failure failed (cancelled if the failure is an operator's cancel); the execution's
    end closes the state it ends in (aborted: cancelled); a state still open is in progress.
    Then the states of `path` never entered, not reached."""
    visits: list[StepVisit] = []

    def close(at: datetime, status: StepStatus | None = None) -> None:
        if visits and visits[-1].status is StepStatus.IN_PROGRESS:
            last = visits[-1]
            ended = status or (StepStatus.FAILED if last.error else StepStatus.SUCCEEDED)
            if ended is StepStatus.FAILED and last.error == RunCancelled.error_name:
                ended = StepStatus.CANCELLED
            visits[-1] = replace(last, status=ended, ended_at=at)

    for event in sorted(events, key=lambda e: int(e["id"])):
        kind, at = event["type"], event["timestamp"]
        if kind.endswith("StateEntered"):
            close(at)
            name = event["stateEnteredEventDetails"]["name"]
            visits.append(StepVisit(name, StepStatus.IN_PROGRESS, started_at=at))
        elif kind.endswith("StateExited"):
            close(at)
        elif kind in _STEP_FAILURES and visits and visits[-1].status is StepStatus.IN_PROGRESS:
            details = event.get(_STEP_FAILURES[kind], {})
            failed = replace(visits[-1], error=details.get("error"), cause=details.get("cause"))
            visits[-1] = failed
        elif kind in _EXECUTION_ENDS:
            details_key, status = _EXECUTION_ENDS[kind]
            details = event.get(details_key, {})
            if visits and visits[-1].status is StepStatus.IN_PROGRESS and not visits[-1].error:
                visits[-1] = replace(
                    visits[-1], error=details.get("error"), cause=details.get("cause")
                )
            close(at, None if status is StepStatus.FAILED else status)
    entered = {visit.step for visit in visits}
    return visits + [StepVisit(s, StepStatus.NOT_REACHED) for s in path if s not in entered]


def execution_history(sfn: Any, execution_arn: str) -> Iterator[Mapping[str, Any]]:
    """Every event of the execution's history, page after page."""
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
    for page in pages:
        yield from page["events"]


def execution_steps(sfn: Any, execution_arn: str) -> list[StepVisit]:
    """The execution's steps, from its history and the definition it runs (the one it started
    with: the file in infra/statemachine as it was deployed then)."""
    described = sfn.describe_state_machine_for_execution(executionArn=execution_arn)
    path = main_path(json.loads(described["definition"]))
    return step_visits(execution_history(sfn, execution_arn), path)


# -- what the database knows --------------------------------------------------------------------

_RUN_QUERY = """
SELECT r.execution_name, r.execution_arn, r.source_id, r.flow_type, r.status,
       r.window_field, r.window_start, r.window_end, r.window_start_inclusive,
       r.lateness_allowance, r.cursor_before, r.cursor_after, r.max_last_modified,
       r.runtime_count, r.records, r.bytes, r.objects, r.malformed_records, r.late_records,
       r.duplicates_skipped, r.future_records, r.respecs_rows, r.progress_records,
       r.progress_bytes, r.download_invocations, r.download_warnings, r.manifest_key,
       r.started_at, r.finished_at,
       EXTRACT(EPOCH FROM r.finished_at - r.started_at) AS duration_seconds,
       r.failed_step, r.error, r.error_detail,
       r.cancel_requested_by, r.cancel_requested_at, r.cancel_reason
  FROM public.source_run r
 WHERE r.execution_name = %(run)s OR r.execution_arn = %(run)s
"""
# How the run came to be asked for: the line of runs the scheduler starts (migration 0015).
_ADMISSION_QUERY = """
SELECT execution_name, execution_arn, source_id, kind, started_for, queued_at, admitted_at
  FROM public.run_admission
 WHERE execution_name = %(run)s OR execution_arn = %(run)s
"""
# Who asked for it with `sourceflow run` (migration 0020).
_REQUEST_QUERY = """
SELECT requested_by, requested_at FROM public.run_request WHERE execution_name = %(name)s
"""
_BACKFILL_QUERY = """
SELECT b.backfill_id, s.slice_number, s.attempt, b.requested_by, b.requested_at, b.reason,
       b.decided_by, b.decided_at, b.decision_reason, b.status,
       b.cancelled_by, b.cancelled_at, b.cancel_reason
  FROM public.backfill_slice_run s JOIN public.backfill b USING (backfill_id)
 WHERE s.execution_name = %(name)s
"""
_APPROVAL_QUERY = """
SELECT status, requested_by, requested_at, decided_by, decided_at, reason, query_hash
  FROM public.run_approval WHERE execution_arn = %(arn)s
"""
# The flow a run ran was set by the last change to the source's params before it started.
_FLOW_SET_QUERY = """
SELECT changed_by, changed_at, reason, to_params FROM public.source_flow_history
 WHERE source_id = %(source_id)s AND changed_at <= %(started_at)s
 ORDER BY changed_at DESC, change_id DESC LIMIT 1
"""


def run_record(db: Database, run: str) -> dict[str, Any] | None:
    """What the database knows of RUN (execution name or ARN): its ledger row, how it was
    asked for, its backfill, its approval and the flow change it ran; None if nothing."""
    with db.transaction() as cur:
        ledger = fetch_one(cur, _RUN_QUERY, {"run": run})
        admission = fetch_one(cur, _ADMISSION_QUERY, {"run": run})
        if ledger is None and admission is None:
            return None
        name = (ledger or admission or {})["execution_name"]
        record: dict[str, Any] = {
            "ledger": ledger,
            "admission": admission,
            "request": fetch_one(cur, _REQUEST_QUERY, {"name": name}),
            "backfill": fetch_one(cur, _BACKFILL_QUERY, {"name": name}),
            "approval": None,
            "flow_set": None,
            "redrive_of": redrives.redriven_run(cur, name),
            "redriven_as": None,
        }
        if ledger is not None:
            record["approval"] = fetch_one(cur, _APPROVAL_QUERY, {"arn": ledger["execution_arn"]})
            record["redriven_as"] = redrives.redrive_of(cur, ledger["execution_arn"])
            if ledger["flow_type"] not in (None, "normal", "backfill"):
                record["flow_set"] = fetch_one(cur, _FLOW_SET_QUERY, ledger)
    if ledger is not None and ledger["duration_seconds"] is not None:
        ledger["duration_seconds"] = round(float(ledger["duration_seconds"]), 3)
    return record


def unknown_run(run: str) -> OperatorError:
    return OperatorError(
        f"no run {run!r}: give its execution name (or ARN) as `sourceflow runs` lists it"
    )


def execution_arn_of(record: Mapping[str, Any]) -> str | None:
    """The run's execution, once one was started for it."""
    for part in ("ledger", "admission"):
        if record[part] is not None and record[part]["execution_arn"]:
            return str(record[part]["execution_arn"])
    return None


# How a run the scheduler started was asked for, by the line's kind (migration 0015).
_ASKED_AS = {"scheduled": "its schedule", "requested": "a Run Requested event"}


def asked_by(record: Mapping[str, Any]) -> str:
    """Who or what asked for the run, and who set the flow it ran, as a sentence."""
    backfill, request, flow_set = record["backfill"], record["request"], record["flow_set"]
    if backfill is not None:
        return (
            f"backfill {backfill['backfill_id']} slice {backfill['slice_number']} (attempt "
            f"{backfill['attempt']}), requested by {backfill['requested_by']}: "
            f"{backfill['reason']}"
        )
    redrive_of = record["redrive_of"]
    if request is not None:
        said = f"{request['requested_by']}, with `sourceflow run`"
    elif redrive_of is not None:
        said = f"{redrive_of['redriven_by']}, with `sourceflow redrive {redrive_of['failed_run']}`"
    else:
        kind = record["admission"]["kind"] if record["admission"] else ""
        said = _ASKED_AS.get(kind, "started outside the scheduler")
    if flow_set is not None:
        said += f"; flow set by {flow_set['changed_by']}: {flow_set['reason']}"
    return said


def approved_by(record: Mapping[str, Any]) -> str | None:
    """Who decided on the run's Re-specs query or on its backfill, if anybody had to."""
    approval, backfill = record["approval"], record["backfill"]
    if approval is not None:
        if approval["status"] == "waiting":
            return f"waiting for a second person since {isoformat(approval['requested_at'])}"
        why = f": {approval['reason']}" if approval["reason"] else ""
        return f"{approval['status']} by {approval['decided_by']}{why}"
    if backfill is not None and backfill["decided_by"]:
        why = f": {backfill['decision_reason']}" if backfill["decision_reason"] else ""
        return f"backfill approved by {backfill['decided_by']}{why}"
    return None


def cancelled_by(record: Mapping[str, Any]) -> str | None:
    ledger, backfill = record["ledger"] or {}, record["backfill"]
    if ledger.get("cancel_requested_by"):
        return f"{ledger['cancel_requested_by']}: {ledger['cancel_reason']}"
    if backfill is not None and backfill["cancelled_by"]:
        return f"{backfill['cancelled_by']} (its backfill): {backfill['cancel_reason']}"
    return None


def redriven_as(record: Mapping[str, Any]) -> str | None:
    """How and by whom a failed run was redriven (`sourceflow redrive`), if it was."""
    redrive = record["redriven_as"]
    if redrive is None:
        return None
    how = (
        "a new run over its window"
        if redrive["how"] == RedriveHow.NEW_RUN
        else "its execution continued (RedriveExecution)"
    )
    return (
        f"{redrive['redrive_execution_name']}: {how}, by {redrive['redriven_by']} at "
        f"{isoformat(redrive['redriven_at'])}"
    )


def run_summary(record: Mapping[str, Any], raw_bucket: str | None) -> dict[str, Any]:
    """The run's fields, in the order `runs show` prints them."""
    ledger, admission = record["ledger"] or {}, record["admission"] or {}
    manifest = ledger.get("manifest_key")
    if manifest and raw_bucket:
        manifest = f"s3://{raw_bucket}/{manifest}"
    status = ledger.get("status") or (
        "admitted, not validated yet" if admission.get("admitted_at") else "waiting for admission"
    )
    return {
        "execution_name": ledger.get("execution_name") or admission.get("execution_name"),
        "source_id": ledger.get("source_id") or admission.get("source_id"),
        "status": status,
        "flow_type": ledger.get("flow_type"),
        "asked_by": asked_by(record),
        "approved_by": approved_by(record),
        "cancelled_by": cancelled_by(record),
        "redrive_of": (record["redrive_of"] or {}).get("failed_run"),
        "redriven_as": redriven_as(record),
        "window_field": ledger.get("window_field"),
        "window_start": ledger.get("window_start"),
        "window_end": ledger.get("window_end"),
        "lateness_allowance": ledger.get("lateness_allowance"),
        "cursor_before": ledger.get("cursor_before"),
        "cursor_after": ledger.get("cursor_after"),
        **{
            counter: ledger.get(counter)
            for counter in (
                "records",
                "bytes",
                "objects",
                "malformed_records",
                "late_records",
                "duplicates_skipped",
                "future_records",
                "respecs_rows",
                "progress_records",
                "progress_bytes",
                "download_invocations",
                "download_warnings",
            )
        },
        "manifest": manifest,
        "queued_at": admission.get("queued_at"),
        "started_at": ledger.get("started_at"),
        "finished_at": ledger.get("finished_at"),
        "duration_seconds": ledger.get("duration_seconds"),
        "failed_step": ledger.get("failed_step"),
        "error": ledger.get("error"),
        "error_detail": ledger.get("error_detail"),
        "execution_arn": execution_arn_of(record),
    }


# Fields `runs show` prints as one line `first → second`: by the first, the line and the second.
_PAIRS = {
    "window_start": ("window", "window_end"),
    "cursor_before": ("cursor", "cursor_after"),
}
# The download's progress so far: said while a run is under way, not once it has its counts.
_PROGRESS_FIELDS = ("progress_records", "progress_bytes")


def table_fields(run: Mapping[str, Any], cell: Callable[[Any], str]) -> list[dict[str, str]]:
    """The run's fields as `field`/`value` rows for a table, `cell` rendering each value: a
    window and a cursor each on one line (`before → after`), fields without a value (or with
    an empty list) left out."""
    seconds = {second for _, second in _PAIRS.values()}
    if run["records"] is not None:
        seconds.update(_PROGRESS_FIELDS)
    rows = []
    for field, value in run.items():
        if field in _PAIRS:
            line, second = _PAIRS[field]
            if value is not None or run[second] is not None:
                ends = (cell(end) if end is not None else "none" for end in (value, run[second]))
                rows.append({"field": line, "value": " → ".join(ends)})
        elif field not in seconds and value not in (None, []):
            rows.append({"field": field, "value": cell(value)})
    return rows


@dataclass(frozen=True)
class RunShown:
    run: dict[str, Any]
    steps: list[StepVisit] | None
    steps_unavailable: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "steps": None if self.steps is None else [step.as_json() for step in self.steps],
            "steps_unavailable": self.steps_unavailable,
        }


def show_run(config: OperatorConfig, db: Database, run: str) -> RunShown:
    """RUN from the database, and its steps from Step Functions when that is reachable; when it
    is not (no region configured, say), why not instead of the steps."""
    record = run_record(db, run)
    if record is None:
        raise unknown_run(run)
    summary = run_summary(record, config.values.get("RAW_BUCKET"))
    arn = summary["execution_arn"]
    if arn is None:
        return RunShown(summary, None, "no execution started yet: it waits for admission")
    import botocore.exceptions

    try:
        steps = execution_steps(config.client("stepfunctions"), arn)
    except botocore.exceptions.NoRegionError:
        return RunShown(summary, None, "no AWS region set (AWS_DEFAULT_REGION)")
    except (
        OperatorError,  # the configuration lacks what reaching AWS needs
        botocore.exceptions.BotoCoreError,
        botocore.exceptions.ClientError,
    ) as exc:
        return RunShown(summary, None, str(exc).strip().splitlines()[0])
    return RunShown(summary, steps, None)


def resolve_execution(db: Database, run: str) -> str:
    """The execution ARN of RUN (its name or ARN) from the ledger or the line of runs."""
    record = run_record(db, run)
    if record is None:
        raise unknown_run(run)
    arn = execution_arn_of(record)
    if arn is None:
        raise OperatorError(
            f"run {run!r} waits for admission and has no execution yet; "
            "`sourceflow status` shows the runs waiting"
        )
    return arn
