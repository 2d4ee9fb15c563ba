"""The scheduler: start the runs that are due, and put special flows back to Normal.

Three inputs, each an EventBridge event on the scheduler's queue:
- a schedule rule's tick: start one run per due source and slot, and ask for resets;
- `Run Requested`: start one run for one source;
- `Flow Reset Requested`: apply a reset if nothing changed since it was decided.
The decisions (`due_sources`, `decide_resets`) are pure; the rest applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.scheduler import adapters
from shared.errors import TransientError
from shared.rules.flows import FlowParams, FlowType, InvalidFlowParams, parse_flow_params
from shared.rules.leases import lease_is_live
from shared.rules.schedules import InvalidSchedule, source_schedule
from shared.runtime.catalogue import DetailType
from shared.runtime.executions import requested_run_nonce
from shared.runtime.observability import logger
from shared.store.db import Database
from shared.store.ledger import set_flow_params
from shared.timefmt import isoformat

NORMAL_PARAMS = FlowParams(FlowType.NORMAL).canonical()

StartRun = Callable[[str, datetime, str], str]  # (source_id, started, nonce) -> execution ARN
Publish = Callable[[str, Mapping[str, Any]], object]  # (detail type, detail)


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
        if schedule is None or lease_is_live(source.locked_by, source.lock_expires_at, now):
            continue
        slot = schedule.previous_slot(now)
        if source.last_scheduled_slot is None or source.last_scheduled_slot < slot:
            due.append(Due(source.source_id, slot))
    return due, problems


def dispatch(now: datetime, *, db: Database, start_run: StartRun) -> list[str]:
    """Start one execution per due source and slot; returns the execution ARNs started.

    The slot is claimed in the same transaction that starts the execution: if starting fails
    the claim rolls back and the tick's redelivery tries again; if the commit fails after the
    start, the redelivery's start meets the same execution name and starts nothing new.
    """
    with db.transaction() as cur:
        sources = [SchedulableSource(**row) for row in adapters.schedulable_sources(cur)]
    due, problems = due_sources(sources, now)
    for problem in problems:
        logger.error("source not scheduled", extra={"problem": problem})
    started, failed = [], []
    for item in due:
        try:
            with db.transaction() as cur:
                if adapters.claim_slot(cur, item.source_id, item.slot):
                    started.append(start_run(item.source_id, item.slot, "sched"))
        except TransientError as exc:
            failed.append(f"{item.source_id}: {exc}")
    logger.info("dispatched", extra={"started": started, "due": len(due)})
    if failed:
        raise TransientError("could not start every due run: " + "; ".join(failed))
    return started


def record_tick(event: Mapping[str, Any], now: datetime, *, db: Database) -> None:
    """Note that a schedule rule's tick arrived (`sourceflow status` shows the last one)."""
    rule = event["resources"][0].rsplit("/", 1)[-1] if event.get("resources") else "unknown"
    with db.transaction() as cur:
        adapters.record_tick(cur, rule, now, event["id"])


def start_requested_run(event: Mapping[str, Any], *, start_run: StartRun) -> str:
    """A `Run Requested` event starts one execution, named after the event so that a
    duplicate delivery of it starts nothing more."""
    requested_at = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
    return start_run(event["detail"]["source_id"], requested_at, requested_run_nonce(event["id"]))


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


def request_resets(now: datetime, *, db: Database, publish: Publish) -> list[ResetDecision]:
    with db.transaction() as cur:
        candidates = [ResetCandidate(**row) for row in adapters.reset_candidates(cur)]
    decisions = decide_resets(candidates, now)
    for decision in decisions:
        detail: dict[str, Any] = {
            "source_id": decision.source_id,
            "expected_params": decision.expected_params,
            "cause": decision.cause,
            "decided_at": isoformat(now),
        }
        if decision.evidence_execution_arn is not None:
            detail["evidence_execution_arn"] = decision.evidence_execution_arn
        publish(DetailType.FLOW_RESET_REQUESTED, detail)
    return decisions


def apply_reset(event: Mapping[str, Any], *, db: Database, now: datetime) -> dict[str, Any] | None:
    """Write Normal if the params are still what the decision saw and no run holds the lock.

    Returns the detail of the `Flow Reset Applied` event to publish, or None when the request
    is dropped. A duplicate request finds the change it already made and returns it again, so
    the applied event is published at least once.
    """
    request_id, detail = event["id"], event["detail"]
    source_id, expected = detail["source_id"], detail["expected_params"]
    with db.transaction() as cur:
        earlier = adapters.change_made_for(cur, request_id)
        if earlier is not None:
            return _applied(source_id, earlier["from_params"], detail["cause"], request_id)
        source = adapters.lock_source(cur, source_id)
        params_changed = "its params changed after the decision (an operator's edit wins)"
        if source is None:
            reason = "the source no longer exists"
        elif source["batch_execution_params"] != expected:
            reason = params_changed
        elif lease_is_live(source["locked_by"], source["lock_expires_at"], now):
            reason = f"a run holds its lock ({source['locked_by']}); the next tick decides again"
        elif not set_flow_params(
            cur,
            source_id,
            NORMAL_PARAMS,
            changed_by="scheduler",
            reason=f"flow reset to Normal: {detail['cause'].replace('_', ' ')}",
            expected=expected,
            check_expected=True,
            request_id=request_id,
        ):
            # The compare-and-set disagreed with the comparison above (they compare JSON
            # differently at the edges): nothing was written, so nothing is announced.
            reason = params_changed
        else:
            return _applied(source_id, expected, detail["cause"], request_id)
    logger.warning("flow reset dropped", extra={"source_id": source_id, "reason": reason})
    return None


def _applied(source_id: str, from_params: Any, cause: str, request_id: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "from_params": from_params,
        "to_params": NORMAL_PARAMS,
        "cause": cause,
        "request_id": request_id,
    }
