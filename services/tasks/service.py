"""The tasks service: do one task of a workflow run when the workflow's state machine asks, and
answer its callback; record the run's end when the machine finishes.

Its inputs, on one queue:
- a `workflow-task-request` of kind sql, notify or ingest (`do_task`), or finish (`finish`);
- the end of a run (`Run Succeeded`, `Run Failed`, `Run Cancelled`: `on_run_ended`), which an
  ingest task waits for: the task asked for its source's run as `sourceflow run` does, kept its
  token with the child run's name, and is answered when that run ends.

Every task is a row of workflow_task_run, claimed on its first delivery: a duplicate delivery,
or a duplicate run-end event, finds the row ended and answers (or does) nothing more. A sql
task's statement and a notify task's message happen at least once: a delivery that dies between
doing them and recording them does them again when SQS hands the message out again.
This module orchestrates one message, its ports passed in (`Ports`); the decisions are
services.tasks.domain's, the SQL services.tasks.adapters'.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from services.tasks import adapters
from services.tasks.domain import (
    FINISH,
    RUNNING,
    Answer,
    TaskFailed,
    alert_text,
    child_answer,
    failed_tasks,
    notification,
    params_to_write,
    query_parameters,
    run_ended,
    run_status,
    variable_value,
)
from services.tasks.settings import Settings
from shared.errors import DuplicateDelivery, TaskOver
from shared.rules.flows import parse_flow_params
from shared.rules.workflows import (
    DEFAULT_INGEST_FLOW,
    TaskKind,
    TaskStatus,
    WorkflowRunStatus,
    sql_problem,
)
from shared.runtime import aws, contracts, executions
from shared.runtime.catalogue import DetailType
from shared.runtime.events import EventPublisher
from shared.runtime.observability import logger
from shared.runtime.redaction import error_text
from shared.runtime.tasks import FailureRecorder, TaskCallbacks
from shared.store.db import Database
from shared.store.ledger import set_flow_params

RESULT_CONTRACT = "workflow-task-result"
# How long a delivery's claim on asking for an ingest task's child run stands: far longer than
# the asking takes (a publish and two small transactions), shorter than the queue's visibility
# timeout, after which the message of a delivery that died comes back to take the claim over.
CHILD_CLAIM_WINDOW = timedelta(seconds=60)
_ENDED_EVENTS = {
    WorkflowRunStatus.SUCCEEDED: DetailType.WORKFLOW_RUN_SUCCEEDED,
    WorkflowRunStatus.FAILED: DetailType.WORKFLOW_RUN_FAILED,
}
Publish = Callable[[str, str], object]  # (subject, message) to an SNS topic


@dataclass(frozen=True)
class Ports:
    """What the service's work reaches: its database, the bus, the callbacks, the two topics
    and the allow-listed sql targets (tests pass fakes for all but the database)."""

    db: Database
    publish_event: EventPublisher
    callbacks: TaskCallbacks
    notifications: Publish
    alerts: Publish
    sql_targets: Mapping[str, str]
    sql_statement_timeout_ms: int

    @classmethod
    def of(cls, settings: Settings, db: Database) -> Ports:
        """The production ports, made once per warm container (the handler caches them)."""
        sns = aws.client("sns")
        return cls(
            db=db,
            publish_event=EventPublisher(aws.client("events"), settings.event_bus_name),
            callbacks=TaskCallbacks(aws.client("stepfunctions")),
            notifications=adapters.Topic(sns, settings.notifications_topic_arn),
            alerts=adapters.Topic(sns, settings.alerts_topic_arn),
            sql_targets=settings.sql_targets,
            sql_statement_timeout_ms=settings.sql_statement_timeout_ms,
        )


def do_task(request: dict[str, Any], ports: Ports) -> dict[str, Any] | None:
    """The fields of the task's result, or None for an ingest task (answered when its child run
    ends). A task that fails raises TaskFailed, which is recorded and reported by name."""
    if request["kind"] == FINISH:
        return finish(request, ports)
    if request["kind"] == TaskKind.INGEST:
        return ingest(request, ports)
    if request["kind"] == TaskKind.SQL:
        return _once(request, ports.db, lambda: run_sql(request, ports))
    return _once(request, ports.db, lambda: notify(request, ports))


def _once(request: Mapping[str, Any], db: Database, work: Callable[[], Answer]) -> dict[str, Any]:
    """Do the task unless a delivery before this one did; either way, its recorded answer."""
    run_id, task = request["workflow_run_id"], request["task"]
    with db.transaction() as cur:
        row = adapters.claim_task(cur, request)
    if row["status"] == RUNNING:
        answer = work()
        with db.transaction() as cur:
            adapters.end_task(cur, run_id, task, answer)
            ended = adapters.lock_task(cur, run_id, task)
        assert ended is not None  # claimed above; rows are never deleted
        row = ended
    return _recorded_result(row)


def _recorded_result(row: Mapping[str, Any]) -> dict[str, Any]:
    """The result fields of an ended task as its row holds them; a failed one fails again."""
    if row["status"] == TaskStatus.FAILED:
        raise TaskFailed(row["error"] or "the task failed")
    output = row["output"] or {}
    return {
        "status": TaskStatus.SUCCEEDED,
        "variables": output.get("variables", {}),
        "detail": output.get("detail", {}),
    }


def run_sql(request: Mapping[str, Any], ports: Ports) -> Answer:
    task, spec = request["task"], request["spec"]
    dsn = ports.sql_targets.get(spec["target"])
    if dsn is None:
        raise TaskFailed(
            f"task {task!r}: sql target {spec['target']!r} is not allowed here (allowed: "
            f"{sorted(ports.sql_targets)}); name one of them, or add it to WORKFLOW_SQL_TARGETS"
        )
    # Checked again, as apply checked it: the message, not only the definition, says the query.
    problem = sql_problem(spec["query"])
    if problem:
        raise TaskFailed(f"task {task!r}: the query {problem}")
    parameters = query_parameters(task, spec, request["variables"])
    found, value = adapters.first_value(
        dsn, spec["query"], parameters, statement_timeout_ms=ports.sql_statement_timeout_ms
    )
    into = spec.get("into")
    return Answer(
        TaskStatus.SUCCEEDED,
        variables={into: variable_value(value)} if into else {},
        detail={"target": spec["target"], "row": found},
    )


def notify(request: Mapping[str, Any], ports: Ports) -> Answer:
    subject, message = notification(request["task"], request["spec"], request["variables"])
    message_id = ports.notifications(subject, message)
    return Answer(TaskStatus.SUCCEEDED, detail={"subject": subject, "message_id": message_id})


# -- ingest ----------------------------------------------------------------------------------------


def ingest(request: Mapping[str, Any], ports: Ports) -> dict[str, Any] | None:
    """Ask for the source's run (as `sourceflow run` does) once, keep the token with the child
    run's name, and answer now if that run has already ended."""
    with ports.db.transaction() as cur:
        row = adapters.claim_task(cur, request)
    if row["status"] != RUNNING:
        return _recorded_result(row)
    child = row["child_run_id"] or _ask_for_child(request, ports)
    answer_child_end(child, db=ports.db, callbacks=ports.callbacks)  # it may have ended already
    return None


def _ask_for_child(request: Mapping[str, Any], ports: Ports) -> str:
    """Ask for the task's child run once, and record it; returns its execution name. One
    delivery at a time asks (a duplicate stands down); one that fails gives its claim back, so
    that SQS's next delivery asks again."""
    db, run_id, task = ports.db, request["workflow_run_id"], request["task"]
    with db.transaction() as cur:
        claimed = adapters.claim_child_request(cur, run_id, task, CHILD_CLAIM_WINDOW)
    if not claimed:
        raise DuplicateDelivery(f"another delivery is asking for task {task!r}'s child run")
    try:
        _prepare_flow(db, request)
        child = executions.request_run(
            ports.publish_event,
            db,
            request["spec"]["source"],
            requested_by=f"workflow {request['workflow']}",
            reason=f"workflow {request['workflow']} run {run_id}, task {task}",
            correlation_id=run_id,
        ).execution_name
        with db.transaction() as cur:
            adapters.set_child(cur, run_id, task, child)
    except BaseException:
        with db.transaction() as cur:
            adapters.release_child_claim(cur, run_id, task)
        raise
    logger.info("child run requested", extra={"task": task, "child_run_id": child})
    return child


def _prepare_flow(db: Database, request: Mapping[str, Any]) -> None:
    """Put the source on the flow the task asks for, unless it is on it already."""
    source_id, asked = request["spec"]["source"], request["spec"].get("flow", DEFAULT_INGEST_FLOW)
    with db.transaction() as cur:
        source = adapters.lock_source_params(cur, source_id)
        unusable = _unusable(source)
        if source is None or unusable:
            # An inactive source's run would be skipped, which no event announces.
            raise TaskFailed(
                f"task {request['task']!r}: source {source_id!r} {unusable}; "
                "`sourceflow sources list` shows the sources"
            )
        current = source["batch_execution_params"]
        to_write = params_to_write(source_id, asked, parse_flow_params(source_id, current))
        if to_write is not None:
            # The row is locked above, so the params are still `current`; the flow history
            # records the change with the workflow run that made it.
            set_flow_params(
                cur,
                source_id,
                to_write,
                reason=f"workflow {request['workflow']} run {request['workflow_run_id']}, "
                f"task {request['task']} asks for its {asked} flow",
                expected=current,
                check_expected=True,
            )


def _unusable(source: Mapping[str, Any] | None) -> str | None:
    if source is None:
        return "does not exist"
    if source["deleted_at"] is not None:
        return "was deleted"
    return None if source["is_active"] else "is disabled (`sourceflow sources enable` it)"


def on_run_ended(event: Mapping[str, Any], *, db: Database, callbacks: TaskCallbacks) -> None:
    """A run ended: answer the ingest task waiting for it, if one is, and those waiting for
    another run of its source. A run that found its source busy was skipped, which no event
    says; the run that held the source has just ended, so a skipped child is found now."""
    detail = event["detail"]
    with db.transaction() as cur:
        children = adapters.children_waited_for(cur, detail["source_id"])
    for child in dict.fromkeys([detail["execution_name"], *children]):
        answer_child_end(child, db=db, callbacks=callbacks)


def answer_child_end(child_run_id: str, *, db: Database, callbacks: TaskCallbacks) -> None:
    """Answer the task waiting for this child run if the run has ended, once: the task's end is
    recorded in the transaction that reports it, so a duplicate event, or the request's own
    look, finds it answered. A report that fails transiently rolls back, to be tried again."""
    with db.transaction() as cur:
        waiting = adapters.waiting_for(cur, child_run_id)
        run = adapters.child_run(cur, child_run_id) if waiting is not None else None
        if waiting is None or run is None or not run_ended(run):
            return
        answer = child_answer(waiting["task"], run)
        if answer.error is not None:  # the ledger's words, redacted as every error that leaves
            answer = replace(answer, error=error_text(answer.error))
        adapters.end_task(cur, waiting["workflow_run_id"], waiting["task"], answer)
        _report(callbacks, waiting["task_token"], answer, waiting["workflow_run_id"])


def _report(callbacks: TaskCallbacks, token: str, answer: Answer, correlation_id: str) -> None:
    try:
        if answer.status == TaskStatus.SUCCEEDED:
            result = contracts.message(
                RESULT_CONTRACT,
                correlation_id=correlation_id,
                status=answer.status,
                variables=answer.variables,
                detail=answer.detail,
            )
            callbacks.succeed(token, result)
        else:
            callbacks.fail(token, TaskFailed.error_name, answer.error or "")
    except TaskOver as exc:
        # The machine gave up on the task (its timeout) or was stopped: nothing waits.
        logger.warning("the task is over; its answer is recorded only", extra={"error": str(exc)})


# -- finish ----------------------------------------------------------------------------------------


def finish(request: Mapping[str, Any], ports: Ports) -> dict[str, Any]:
    """Record the workflow run's end and, the first time, announce it: Workflow Run Failed and
    an alert when a task failed, Workflow Run Succeeded otherwise. Published inside the
    transaction that records the end, so a failed publish is tried again on redelivery."""
    run_id, statuses = request["workflow_run_id"], request["statuses"]
    status, failed = run_status(statuses), failed_tasks(statuses)
    with ports.db.transaction() as cur:
        adapters.record_skipped(
            cur, run_id, sorted(t for t, s in statuses.items() if s == TaskStatus.SKIPPED)
        )
        ended_now = adapters.end_workflow_run(cur, run_id, status)
        if ended_now is None:
            # Every run is recorded before it starts (`workflow run`, the scheduler); one that
            # was not, started by hand, ends without its announcement.
            logger.warning("no workflow run recorded by this id", extra={"workflow_run_id": run_id})
        if ended_now:
            ports.publish_event(
                _ENDED_EVENTS[status],
                {
                    "workflow": request["workflow"],
                    "workflow_version": request["workflow_version"],
                    "workflow_run_id": run_id,
                    "statuses": statuses,
                    "failed_tasks": failed,
                    "variables": request["variables"],
                },
                correlation_id=run_id,
            )
            if failed:
                errors = adapters.task_errors(cur, run_id)
                ports.alerts(
                    f"sourceflow: workflow {request['workflow']} failed",
                    alert_text(request["workflow"], run_id, failed, errors),
                )
    return {"status": status, "variables": {}, "detail": {"failed_tasks": failed}}


def failure_recorder(db: Database, _step: str) -> FailureRecorder:
    """Records a task's failure in its row (the emulator drops SendTaskFailure's cause); a
    finish that fails is in the logs and the delivery failures."""

    def record(message: Mapping[str, Any], error_name: str, detail: str) -> None:
        if message["kind"] == FINISH:
            return
        with db.transaction() as cur:
            adapters.claim_task(cur, message)
            # A task's own failure says what failed; any other names its error first.
            named = detail if error_name == TaskFailed.error_name else f"{error_name}: {detail}"
            answer = Answer(TaskStatus.FAILED, error=named)
            adapters.end_task(cur, message["workflow_run_id"], message["task"], answer)

    return record
