"""The scheduler: start the runs that are due as admission allows, and put special flows back
to Normal.

Its inputs, each an EventBridge event on the scheduler's queue:
- a schedule rule's tick (`tick`): enable the sources disabled until a time now passed, queue
  one run per due source and slot, then the next slice of the backfills whose sources are
  free, admit, ask for resets, and announce the sources that went overdue or recovered;
- `Run Requested` (`start_runs`): queue one run for one source, and admit;
- `Run Succeeded`, `Run Failed`, `Run Cancelled` (`start_runs`): a place may be free, admit;
- `Flow Reset Requested` (`reset_flow`): apply a reset if nothing changed since it was decided.

A tick also starts the scheduled workflows that are due (`start_due_workflows`), by the same
rule as sources: their runs do not wait for admission (an ingest task's run does, as any run).

Admission (`admit`, shared/rules/admission.py): runs wait in a line (shared/store/admission.py)
and start, oldest first, only while fewer runs are under way than downloads can run at once,
so that no Download task waits in its queue with its heartbeat clock running.
This module orchestrates one event, its ports (the database, the execution starter, the event
publisher) passed in as arguments; the decisions are pure, in services.scheduler.domain.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from services.scheduler import adapters
from services.scheduler.domain import (
    NORMAL_PARAMS,
    PARAMS_CHANGED,
    SCHEDULED_NONCE,
    Admission,
    ResetCandidate,
    ResetDecision,
    SchedulableSource,
    SchedulableWorkflow,
    backfill_candidate,
    decide_resets,
    due_sources,
    due_workflows,
    requested_run,
    reset_applied,
    reset_requested,
    scheduled_run,
    slice_run,
    slices_to_start,
    source_overdue,
    source_recovered,
    unseen_starts,
    why_not_reset,
)
from shared.errors import PermanentError, TransientError
from shared.rules.admission import runs_to_admit
from shared.rules.freshness import Announcement, Freshness, announcement
from shared.rules.schedules import InvalidSchedule
from shared.rules.workflows import run_variables
from shared.runtime.catalogue import DetailType
from shared.runtime.observability import logger, metrics
from shared.store import admission as line
from shared.store import backfills, freshness, workflows
from shared.store.admission import RunKind
from shared.store.db import Database
from shared.store.ledger import set_flow_params
from shared.timefmt import parse_iso

StartRun = Callable[[str, datetime, str], str]
# `start_due_workflows` with its ports: starts the workflows due at the moment, returns run ids.
StartWorkflows = Callable[[datetime], list[str]]  # (source_id, started, nonce) -> execution ARN
Admit = Callable[[], list[str]]  # `admit` with its ports: starts what it may, returns the ARNs
Publish = Callable[[str, Mapping[str, Any]], object]  # (detail type, detail)
SOURCES_OVERDUE_METRIC = "SourcesOverdue"
"""How many scheduled sources a tick found overdue (the scheduler stack's alarm pages on it)."""


class EachOnItsOwn:
    """Items a tick does one by one, each in a transaction of its own: one that fails for now
    never keeps the others from being done, and the tick's delivery is retried at the end
    (`raise_if_any`) so the next delivery does what is left; what was done stays done."""

    def __init__(self, what: str) -> None:
        self.what = what  # "queue every due run": the end of "could not …"
        self.failed: list[str] = []

    @contextmanager
    def item(self, name: str) -> Iterator[None]:
        try:
            yield
        except TransientError as exc:
            self.failed.append(f"{name}: {exc}")

    def raise_if_any(self) -> None:
        if self.failed:
            raise TransientError(f"could not {self.what}: " + "; ".join(self.failed))


def dispatch(now: datetime, *, db: Database) -> list[str]:
    """Put one run per due source and slot in the line; returns the sources it queued one for.

    The slot is claimed in the transaction that puts its run in the line, so a duplicate or
    redelivered tick queues nothing more; the run stays in the line, its source claimed for
    the slot, until a place frees (`admit`). A source whose claim fails for good (its row
    breaks the table's bounds) is logged and passed over: one source's row never keeps the
    others from their runs.
    """
    with db.transaction() as cur:
        sources = [SchedulableSource(**row) for row in adapters.schedulable_sources(cur)]
    due, problems = due_sources(sources, now)
    for problem in problems:
        logger.error("source not scheduled", extra={"problem": problem})
    queued: list[str] = []
    each = EachOnItsOwn("queue every due run")
    for item in due:
        with each.item(item.source_id):
            try:
                with db.transaction() as cur:
                    if adapters.claim_slot(cur, item.source_id, item.slot):
                        line.queue_run(cur, scheduled_run(item), RunKind.SCHEDULED)
                        queued.append(item.source_id)
            except PermanentError as exc:
                logger.error(
                    "source not scheduled",
                    extra={"source_id": item.source_id, "problem": str(exc)},
                )
    logger.info("dispatched", extra={"queued": len(queued), "due": len(due)})
    each.raise_if_any()
    return queued


def queue_backfill_slices(now: datetime, *, db: Database, busy: Collection[str] = ()) -> None:
    """Put in the line the next slice of each active backfill whose source is free (`busy`:
    sources this tick queued a Normal run of; sources with a run in the line are not free
    either), and again any slice execution validation has not seen and the line does not hold.

    Each slice's execution is recorded, and put in the line, in one transaction, under the name
    validation finds its slice by; the line holds a name once.
    """
    with db.transaction() as cur:
        rows = backfills.active_on_active_sources(cur)
        attempts = backfills.attempts_of(cur, [row["backfill_id"] for row in rows])
        waiting = line.waiting_sources(cur)
    candidates = [backfill_candidate(row, attempts[row["backfill_id"]]) for row in rows]
    starts = unseen_starts(candidates)
    for start in slices_to_start(candidates, now, busy={*busy, *waiting}):
        with db.transaction() as cur:
            # A concurrent tick that recorded this attempt first puts it in the line.
            if adapters.record_slice_start(cur, start):
                line.queue_run(cur, slice_run(start), RunKind.BACKFILL)
    with db.transaction() as cur:
        for start in starts:
            line.queue_run(cur, slice_run(start), RunKind.BACKFILL)


def admit(*, db: Database, start_run: StartRun, admission: Admission) -> list[str]:
    """Start the runs waiting longest, while fewer runs are under way than admission allows;
    returns the execution ARNs started. Called on every tick, run request and run end.

    One pass at a time (the line's lock), each run started under its own name: a pass that
    dies after starting a run and before its commit leaves the run first in the line, and
    the next pass meets the execution already there and records it. A start that fails
    leaves the runs after it waiting; those started before it stay admitted, and the delivery
    is retried.
    """
    started: list[str] = []
    failed: TransientError | None = None
    with db.transaction() as cur:
        line.hold_the_line(cur)
        under_way = line.runs_under_way(cur, validation_bound=admission.validation_bound)
        waiting = line.waiting_runs(cur, limit=admission.capacity)
        for run in runs_to_admit(waiting, under_way=under_way, capacity=admission.capacity):
            try:
                arn = start_run(run.source_id, run.started_for, run.nonce)
            except TransientError as exc:
                failed = exc
                break
            line.mark_admitted(cur, run.execution_name, arn)
            started.append(arn)
    if failed is not None:
        raise failed
    return started


def record_tick(event: Mapping[str, Any], now: datetime, *, db: Database) -> None:
    """Note that a schedule rule's tick arrived (`sourceflow status` shows the last one)."""
    rule = event["resources"][0].rsplit("/", 1)[-1] if event.get("resources") else "unknown"
    with db.transaction() as cur:
        adapters.record_tick(cur, rule, now, event["id"])


def start_runs(event: Mapping[str, Any], *, db: Database, admit: Admit) -> list[str]:
    """A `Run Requested` event puts one run in the line, named after the event so that a
    duplicate delivery of it queues nothing more; a run's end (`Run Succeeded`, `Run Failed`,
    `Run Cancelled`) may have freed a place. Either way, start what admission allows."""
    if event["detail-type"] == DetailType.RUN_REQUESTED:
        with db.transaction() as cur:
            line.queue_run(cur, requested_run(event), RunKind.REQUESTED)
    return admit()


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


def announce_freshness(now: datetime, *, db: Database, publish: Publish) -> list[str]:
    """Announce each source that went overdue (`Source Overdue`) or recovered with a success
    (`Source Recovered`), once per episode; returns the sources announced. How many sources
    are overdue is a metric (`SOURCES_OVERDUE_METRIC`), which the scheduler's alarm pages on.

    Each announcement is decided again, on the source's row read afresh, in the transaction
    that records it, and published before that transaction commits: a second tick or
    scheduler waits for the first and finds the episode recorded (nothing to say), and a
    publish that fails leaves nothing recorded, so the next tick says it again. A source
    whose schedule is unreadable is passed over (`dispatch` logs why).
    """
    with db.transaction() as cur:
        watched = [(row, _freshness(row, now)) for row in freshness.watched_sources(cur)]
    overdue = sum(1 for _, fresh in watched if fresh is not None and fresh.overdue)
    metrics.add_metric(name=SOURCES_OVERDUE_METRIC, unit=MetricUnit.Count, value=overdue)
    announced: list[str] = []
    each = EachOnItsOwn("announce every overdue source")
    for row, fresh in watched:
        if fresh is None or announcement(fresh, row["announced_since"]) is None:
            continue
        with each.item(row["source_id"]), db.transaction() as cur:
            current = freshness.freshness_rows(cur, [row["source_id"]]).get(row["source_id"])
            if current is not None and _announce(cur, current, now, publish):
                announced.append(row["source_id"])
    if announced:
        logger.info("freshness announced", extra={"sources": announced})
    each.raise_if_any()
    return announced


def _freshness(row: Mapping[str, Any], now: datetime) -> Freshness | None:
    try:
        return freshness.freshness_of(row, now)
    except InvalidSchedule:
        return None


def _announce(cur: Any, row: Mapping[str, Any], now: datetime, publish: Publish) -> bool:
    """Record or clear the source's episode as `announcement` says, publishing its event;
    False when there was nothing (more) to say."""
    fresh = _freshness(row, now)
    what = None if fresh is None else announcement(fresh, row["announced_since"])
    if fresh is None or what is None:
        return False
    source_id = row["source_id"]
    if what is Announcement.OVERDUE:
        assert fresh.since is not None and fresh.overdue_at is not None
        if not freshness.record_overdue(cur, source_id, fresh.since, fresh.overdue_at):
            return False
        publish(DetailType.SOURCE_OVERDUE, source_overdue(row, fresh))
        return True
    if not freshness.clear_overdue(cur, source_id, row["announced_since"]):
        return False
    if what is Announcement.RECOVERED:
        publish(
            DetailType.SOURCE_RECOVERED, source_recovered(source_id, row["announced_since"], fresh)
        )
    return True


def enable_due(*, db: Database) -> list[str]:
    """Enable the sources a person disabled until a time that has now passed
    (`sourceflow sources disable --until`), before their slots are looked at."""
    with db.transaction() as cur:
        enabled = adapters.enable_due_sources(cur)
    if enabled:
        logger.info("sources enabled: their --until passed", extra={"sources": enabled})
    return enabled


def start_due_workflows(now: datetime, *, db: Database, sfn: Any) -> list[str]:
    """Start one run of each due workflow's current version per slot, with its variables'
    defaults; returns the run ids. The slot is claimed in the transaction that records the
    run, which is started under a name made of the slot: a duplicate tick starts nothing more,
    and a start that failed leaves the slot free for the next delivery."""
    with db.transaction() as cur:
        rows = [SchedulableWorkflow(**row) for row in workflows.schedulable(cur)]
    due, problems = due_workflows(rows, now)
    for problem in problems:
        logger.error("workflow not scheduled", extra={"problem": problem})
    started: list[str] = []
    each = EachOnItsOwn("start every due workflow")
    for item in due:
        with each.item(item.name), db.transaction() as cur:
            workflow = workflows.current(cur, item.name)
            if workflow is None or not workflows.claim_slot(cur, item.name, item.slot):
                continue
            declared = workflow["definition"].get("variables", {})
            variables = run_variables(item.name, declared, {})
            started.append(
                workflows.start_run(
                    cur, sfn, workflow, variables, started=item.slot, nonce=SCHEDULED_NONCE
                )
            )
    each.raise_if_any()
    return started


def tick(
    event: Mapping[str, Any],
    *,
    db: Database,
    admit: Admit,
    publish: Publish,
    start_workflows: StartWorkflows,
) -> None:
    """A schedule rule's tick: noted, the sources disabled until now enabled, then the due
    runs and backfill slices queued and admitted, the due workflows started, the resets asked
    for, and the sources that went overdue or recovered announced."""
    # The tick's own time names the slots, so a redelivered tick decides the same way.
    now = parse_iso(event["time"])
    record_tick(event, now, db=db)
    enable_due(db=db)
    normal_runs = dispatch(now, db=db)
    queue_backfill_slices(now, db=db, busy=normal_runs)
    admit()
    start_workflows(now)
    request_resets(now, db=db, publish=publish)
    announce_freshness(now, db=db, publish=publish)


def reset_flow(event: Mapping[str, Any], *, db: Database, publish: Publish, now: datetime) -> None:
    """A `Flow Reset Requested` event: applied (`apply_reset`), and announced when it was."""
    applied = apply_reset(event, db=db, now=now)
    if applied is not None:
        publish(DetailType.FLOW_RESET_APPLIED, applied)
