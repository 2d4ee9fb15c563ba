"""The scheduler's decisions, pure: which sources are due for a run and in which slot
(`due_sources`), which backfill slices start (`slices_to_start`), the run each due slot, run
request or slice waits as (`scheduled_run`, `requested_run`, `slice_run`) until admission starts
it (shared/rules/admission.py), which special flows have done their job and go back to Normal
(`decide_resets`), whether a reset request may still be applied when it arrives
(`why_not_reset`), and the details of the events that carry them (the overdue sources' too:
shared/rules/freshness.py decides which).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.rules.admission import WaitingRun
from shared.rules.backfills import (
    BackfillRange,
    BackfillState,
    BackfillStatus,
    Progress,
    SliceAttempt,
    progress,
    slice_nonce,
)
from shared.rules.flows import FlowParams, FlowType, InvalidFlowParams, parse_flow_params
from shared.rules.freshness import Freshness
from shared.rules.leases import lease_is_live
from shared.rules.schedules import InvalidSchedule, due_slot, source_schedule
from shared.rules.source_settings import format_duration
from shared.runtime.executions import execution_name, requested_run_nonce
from shared.timefmt import isoformat, parse_iso

NORMAL_PARAMS = FlowParams(FlowType.NORMAL).canonical()
SCHEDULED_NONCE = "sched"
"""The name suffix of a scheduled run: `<source>-<slot>-sched`."""
PARAMS_CHANGED = "its params changed after the decision (an operator's edit wins)"


@dataclass(frozen=True)
class SchedulableSource:
    source_id: str
    schedule_interval: Any
    schedule_cron: str | None
    last_scheduled_slot: datetime | None
    locked_by: str | None
    lock_expires_at: datetime | None


@dataclass(frozen=True)
class Due:
    source_id: str
    slot: datetime


def due_sources(sources: list[SchedulableSource], now: datetime) -> tuple[list[Due], list[str]]:
    """Which sources are due now, and the problems that kept others from being considered."""
    due: list[Due] = []
    problems: list[str] = []
    for source in sources:
        try:
            schedule = source_schedule(
                source.source_id, source.schedule_interval, source.schedule_cron
            )
        except InvalidSchedule as exc:
            problems.append(str(exc))
            continue
        if lease_is_live(source.locked_by, source.lock_expires_at, now):
            continue
        slot = due_slot(schedule, source.last_scheduled_slot, now)
        if slot is not None:
            due.append(Due(source.source_id, slot))
    return due, problems


@dataclass(frozen=True)
class SchedulableWorkflow:
    name: str
    schedule_interval: Any
    schedule_cron: str | None
    last_scheduled_slot: datetime | None


@dataclass(frozen=True)
class DueWorkflow:
    name: str
    slot: datetime


def due_workflows(
    workflows: list[SchedulableWorkflow], now: datetime
) -> tuple[list[DueWorkflow], list[str]]:
    """Which workflows are due a run now, by the same rule as sources (`due_slot`), and the
    problems that kept others from being considered."""
    due: list[DueWorkflow] = []
    problems: list[str] = []
    for workflow in workflows:
        try:
            schedule = source_schedule(
                workflow.name, workflow.schedule_interval, workflow.schedule_cron, kind="workflow"
            )
        except InvalidSchedule as exc:
            problems.append(str(exc))
            continue
        slot = due_slot(schedule, workflow.last_scheduled_slot, now)
        if slot is not None:
            due.append(DueWorkflow(workflow.name, slot))
    return due, problems


@dataclass(frozen=True)
class Admission:
    """How the scheduler admits runs: at most `capacity` under way at once
    (shared/rules/admission.py `admission_capacity`); a run admitted and not recorded by
    validation within `validation_bound` (the Validate task's timeout) no longer counts."""

    capacity: int
    validation_bound: timedelta


def scheduled_run(due: Due) -> WaitingRun:
    """The run a due slot waits as, named after its slot: a redelivered tick names the same."""
    return _waiting(due.source_id, due.slot, SCHEDULED_NONCE)


def requested_run(event: Mapping[str, Any]) -> WaitingRun:
    """The run a `Run Requested` event waits as, timed by the event and named after its id, so
    that a duplicate delivery names the same run (and the requester can find it)."""
    source_id = event["detail"]["source_id"]
    return _waiting(source_id, parse_iso(event["time"]), requested_run_nonce(event["id"]))


def _waiting(source_id: str, started_for: datetime, nonce: str) -> WaitingRun:
    return WaitingRun(execution_name(source_id, started_for, nonce), source_id, started_for, nonce)


@dataclass(frozen=True)
class BackfillCandidate:
    """An active backfill of an active source: where it stands, and its source's lock."""

    backfill_id: int
    source_id: str
    locked_by: str | None
    lock_expires_at: datetime | None
    progress: Progress


@dataclass(frozen=True)
class SliceStart:
    """An execution to start for a slice, named from `started_at` and the slice's nonce."""

    backfill_id: int
    source_id: str
    slice_number: int
    attempt: int
    started_at: datetime

    @property
    def nonce(self) -> str:
        return slice_nonce(self.backfill_id, self.slice_number, self.attempt)


def backfill_candidate(
    backfill: Mapping[str, Any], attempts: Sequence[SliceAttempt]
) -> BackfillCandidate:
    """An active backfill's row (with its source's lock) and the executions of its slices."""
    return BackfillCandidate(
        backfill["backfill_id"],
        backfill["source_id"],
        backfill["locked_by"],
        backfill["lock_expires_at"],
        progress(
            BackfillStatus(backfill["status"]),
            BackfillRange.of(backfill),
            attempts,
            retried_at=backfill["retried_at"],
        ),
    )


def slices_to_start(
    candidates: list[BackfillCandidate], now: datetime, *, busy: Collection[str]
) -> list[SliceStart]:
    """The next slice of the oldest backfill of each free source: one run at a time per
    source, and a source's Normal run (`busy`: started by this tick) goes first."""
    running = {c.source_id for c in candidates if c.progress.state is BackfillState.RUNNING}
    taken = set(busy) | running
    starts = []
    for candidate in sorted(candidates, key=lambda c: c.backfill_id):
        following = candidate.progress.start_next
        if (
            following is None
            or candidate.source_id in taken
            or lease_is_live(candidate.locked_by, candidate.lock_expires_at, now)
        ):
            continue
        taken.add(candidate.source_id)
        starts.append(
            SliceStart(
                candidate.backfill_id,
                candidate.source_id,
                following.slice_number,
                following.attempt,
                now,
            )
        )
    return starts


def slice_run(start: SliceStart) -> WaitingRun:
    """The run a backfill slice's execution waits as, under the name validation finds it by."""
    return _waiting(start.source_id, start.started_at, start.nonce)


def unseen_starts(candidates: list[BackfillCandidate]) -> list[SliceStart]:
    """Slice executions recorded and not yet seen by validation, perhaps never started (the
    scheduler stopped between recording and starting): started again under their own names,
    which starts nothing when the execution exists."""
    return [
        SliceStart(
            c.backfill_id,
            c.source_id,
            current.slice_number,
            current.attempt,
            current.started_at,
        )
        for c in candidates
        if c.progress.state is BackfillState.RUNNING
        and (current := c.progress.current) is not None
        and current.run_status is None
    ]


@dataclass(frozen=True)
class ResetCandidate:
    source_id: str
    batch_execution_params: dict[str, Any] | None
    params_changed_at: datetime
    locked_by: str | None
    lock_expires_at: datetime | None
    last_success_arn: str | None
    last_success_params: dict[str, Any] | None
    last_success_finished_at: datetime | None


@dataclass(frozen=True)
class ResetDecision:
    source_id: str
    expected_params: dict[str, Any] | None
    cause: str
    evidence_execution_arn: str | None


def decide_resets(candidates: list[ResetCandidate], now: datetime) -> list[ResetDecision]:
    """Special flows whose job is done: a run of exactly these params succeeded after they
    were set, or their `reset_at` has passed. Never while a run holds the lock."""
    decisions = []
    for source in candidates:
        if lease_is_live(source.locked_by, source.lock_expires_at, now):
            continue
        try:
            params = parse_flow_params(source.source_id, source.batch_execution_params)
        except InvalidFlowParams:
            continue  # validation reports bad params on the source's next run
        if params.flow_type is FlowType.NORMAL:
            continue
        if params.reset_at is not None and params.reset_at <= now:
            decisions.append(
                ResetDecision(
                    source.source_id, source.batch_execution_params, "reset_at_passed", None
                )
            )
        elif (
            source.last_success_finished_at is not None
            and source.last_success_finished_at >= source.params_changed_at
            and source.last_success_params == params.canonical()
        ):
            decisions.append(
                ResetDecision(
                    source.source_id,
                    source.batch_execution_params,
                    "special_flow_succeeded",
                    source.last_success_arn,
                )
            )
    return decisions


def reset_requested(decision: ResetDecision, now: datetime) -> dict[str, Any]:
    """The detail of a `Flow Reset Requested` event."""
    detail: dict[str, Any] = {
        "source_id": decision.source_id,
        "expected_params": decision.expected_params,
        "cause": decision.cause,
        "decided_at": isoformat(now),
    }
    if decision.evidence_execution_arn is not None:
        detail["evidence_execution_arn"] = decision.evidence_execution_arn
    return detail


def why_not_reset(source: Mapping[str, Any] | None, expected: Any, now: datetime) -> str | None:
    """Why a reset request is dropped when it arrives, or None to apply it: the source's
    params must still be the ones the decision saw, and no run may hold its lock."""
    if source is None:
        return "the source no longer exists"
    if source["batch_execution_params"] != expected:
        return PARAMS_CHANGED
    if lease_is_live(source["locked_by"], source["lock_expires_at"], now):
        return f"a run holds its lock ({source['locked_by']}); the next tick decides again"
    return None


def reset_applied(source_id: str, from_params: Any, cause: str, request_id: str) -> dict[str, Any]:
    """The detail of a `Flow Reset Applied` event."""
    return {
        "source_id": source_id,
        "from_params": from_params,
        "to_params": NORMAL_PARAMS,
        "cause": cause,
        "request_id": request_id,
    }


def source_overdue(source: Mapping[str, Any], fresh: Freshness) -> dict[str, Any]:
    """The detail of a `Source Overdue` event, from the source's freshness row."""
    interval = source["schedule_interval"]
    return {
        "source_id": source["source_id"],
        "schedule": source["schedule_cron"] or f"every {format_duration(interval)}",
        "overdue_after_periods": source["overdue_after_periods"],
        "last_success_at": fresh.last_success_at,
        "since": fresh.since,
        "overdue_at": fresh.overdue_at,
        "next_due_at": fresh.next_due_at,
    }


def source_recovered(source_id: str, since: datetime, fresh: Freshness) -> dict[str, Any]:
    """The detail of a `Source Recovered` event: the success that ended the episode `since`."""
    return {"source_id": source_id, "since": since, "recovered_at": fresh.last_success_at}
