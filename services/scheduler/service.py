"""The scheduler: start the runs that are due, and put special flows back to Normal.

Three inputs, each an EventBridge event on the scheduler's queue:
- a schedule rule's tick (`tick`): start one run per due source and slot, then the next slice
  of the backfills whose sources are free, and ask for resets;
- `Run Requested` (`start_requested_run`): start one run for one source;
- `Flow Reset Requested` (`reset_flow`): apply a reset if nothing changed since it was decided.
This module orchestrates one event, its ports (the database, the execution starter, the event
publisher) passed in as arguments; the decisions are pure, in services.scheduler.domain.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from services.scheduler import adapters
from services.scheduler.domain import (
    NORMAL_PARAMS,
    PARAMS_CHANGED,
    ResetCandidate,
    ResetDecision,
    SchedulableSource,
    backfill_candidate,
    decide_resets,
    due_sources,
    reset_applied,
    reset_requested,
    slices_to_start,
    unseen_starts,
    why_not_reset,
)
from shared.errors import PermanentError, TransientError
from shared.runtime.catalogue import DetailType
from shared.runtime.executions import requested_run_nonce
from shared.runtime.observability import logger
from shared.store import backfills
from shared.store.db import Database
from shared.store.ledger import set_flow_params
from shared.timefmt import parse_iso

StartRun = Callable[[str, datetime, str], str]  # (source_id, started, nonce) -> execution ARN
Publish = Callable[[str, Mapping[str, Any]], object]  # (detail type, detail)


def dispatch(now: datetime, *, db: Database, start_run: StartRun) -> list[str]:
    """Start one execution per due source and slot; returns the sources it started one for.

    The slot is claimed in the same transaction that starts the execution: if starting fails
    the claim rolls back and the tick's redelivery tries again; if the commit fails after the
    start, the redelivery's start meets the same execution name and starts nothing new. A
    source whose claim fails for good (its row breaks the table's bounds) is logged and passed
    over: one source's row never keeps the others from their runs.
    """
    with db.transaction() as cur:
        sources = [SchedulableSource(**row) for row in adapters.schedulable_sources(cur)]
    due, problems = due_sources(sources, now)
    for problem in problems:
        logger.error("source not scheduled", extra={"problem": problem})
    started, failed = {}, []
    for item in due:
        try:
            with db.transaction() as cur:
                if adapters.claim_slot(cur, item.source_id, item.slot):
                    started[item.source_id] = start_run(item.source_id, item.slot, "sched")
        except TransientError as exc:
            failed.append(f"{item.source_id}: {exc}")
        except PermanentError as exc:
            logger.error(
                "source not scheduled", extra={"source_id": item.source_id, "problem": str(exc)}
            )
    logger.info("dispatched", extra={"started": list(started.values()), "due": len(due)})
    if failed:
        raise TransientError("could not start every due run: " + "; ".join(failed))
    return list(started)


def start_backfill_slices(
    now: datetime, *, db: Database, start_run: StartRun, busy: Collection[str] = ()
) -> list[str]:
    """Start the next slice of each active backfill whose source is free (`busy`: sources this
    tick started a Normal run of), and again any slice execution validation has not seen;
    returns the execution ARNs started.

    Each execution is recorded before it is started, under the name validation finds its
    slice by; starting a recorded name again starts nothing new (`ExecutionStarter`).
    """
    with db.transaction() as cur:
        rows = backfills.active_on_active_sources(cur)
        attempts = backfills.attempts_of(cur, [row["backfill_id"] for row in rows])
    candidates = [backfill_candidate(row, attempts[row["backfill_id"]]) for row in rows]
    starts = unseen_starts(candidates)
    for start in slices_to_start(candidates, now, busy=busy):
        with db.transaction() as cur:
            # A concurrent tick that recorded this attempt first starts it (under its name).
            if adapters.record_slice_start(cur, start):
                starts.append(start)
    started = [start_run(start.source_id, start.started_at, start.nonce) for start in starts]
    logger.info("backfill slices started", extra={"started": started})
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


def request_resets(now: datetime, *, db: Database, publish: Publish) -> list[ResetDecision]:
    with db.transaction() as cur:
        candidates = [ResetCandidate(**row) for row in adapters.reset_candidates(cur)]
    decisions = decide_resets(candidates, now)
    for decision in decisions:
        publish(DetailType.FLOW_RESET_REQUESTED, reset_requested(decision, now))
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
            return reset_applied(source_id, earlier["from_params"], detail["cause"], request_id)
        reason = why_not_reset(adapters.lock_source(cur, source_id), expected, now)
        if reason is None:
            if set_flow_params(
                cur,
                source_id,
                NORMAL_PARAMS,
                reason=f"flow reset to Normal: {detail['cause'].replace('_', ' ')}",
                expected=expected,
                check_expected=True,
                request_id=request_id,
            ):
                return reset_applied(source_id, expected, detail["cause"], request_id)
            # The compare-and-set disagreed with the comparison above (they compare JSON
            # differently at the edges): nothing was written, so nothing is announced.
            reason = PARAMS_CHANGED
    logger.warning("flow reset dropped", extra={"source_id": source_id, "reason": reason})
    return None


def tick(event: Mapping[str, Any], *, db: Database, start_run: StartRun, publish: Publish) -> None:
    """A schedule rule's tick: noted, then the due runs started and the resets asked for."""
    # The tick's own time names the slots, so a redelivered tick decides the same way.
    now = parse_iso(event["time"])
    record_tick(event, now, db=db)
    normal_runs = dispatch(now, db=db, start_run=start_run)
    start_backfill_slices(now, db=db, start_run=start_run, busy=normal_runs)
    request_resets(now, db=db, publish=publish)


def reset_flow(event: Mapping[str, Any], *, db: Database, publish: Publish, now: datetime) -> None:
    """A `Flow Reset Requested` event: applied (`apply_reset`), and announced when it was."""
    applied = apply_reset(event, db=db, now=now)
    if applied is not None:
        publish(DetailType.FLOW_RESET_APPLIED, applied)
