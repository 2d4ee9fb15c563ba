"""What the console's HTTP API answers: plain functions of the person acting (`Operator`) and
the request's arguments, each a call to the operator command's own modules (ops/*), so the
console and `sourceflow` read and decide through the same code. The pages render exactly what
these return: they read through the API.

Nothing returned carries a secret value: a source's connection (which names its secrets) and
an approval's task token are left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timedelta
from typing import Any

from console import charts, graph
from infra import statemachine
from infra.resources import SERVICES
from ops import approvals, dlq, run_view, runs, sources, status, workflows
from ops.config import OperatorConfig, OperatorError
from ops.output import json_value
from shared.rules.workflows import TaskStatus
from shared.runtime.tasks import TaskCallbacks
from shared.store import workflows as workflow_store
from shared.store.db import Database
from shared.timefmt import utc_now

# How far back the runs-over-time chart looks by default, and at most.
DEFAULT_CHART_DAYS = 7
MAX_CHART_DAYS = 90
CHART_RUNS = 1000  # the runs it draws at most (the newest)
# An approval as the API shows it (no task token: it would let anyone answer the task).
APPROVAL_FIELDS = ("execution_name", "source_id", "query", "requested_by", "requested_at")
# A cancel as the API answers it.
CANCEL_FIELDS = ("execution_name", "source_id", "cancel_requested_by")
# A source's columns the API leaves out, in its settings and in their history: its connection
# names where its secrets live (and a row written by hand may hold more than names).
HIDDEN_SOURCE_FIELDS = ("connection",)


@dataclass(frozen=True)
class Operator:
    """The person a request acts as: their login (what the database records), the deployment's
    settings and a connection as that login."""

    login: str
    config: OperatorConfig
    db: Database

    def client(self, service_name: str) -> Any:
        return self.config.client(service_name)


def whoami(op: Operator) -> dict[str, Any]:
    return {"login": op.login}


def sources_list(op: Operator) -> list[dict[str, Any]]:
    return sources.sources_list(op.db)


def source_show(op: Operator, source_id: str) -> dict[str, Any]:
    shown = sources.source_show(op.db, source_id)
    source = _without_hidden(shown["source"])
    changes = [
        {**change, "changes": _without_hidden(change["changes"])} for change in shown["changes"]
    ]
    freshness = next(
        (row for row in sources.sources_list(op.db, deleted=True) if row["source_id"] == source_id),
        None,
    )
    return {**shown, "source": source, "changes": changes, "freshness": freshness}


def _without_hidden(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """A source's fields (or a change's, by field) without those the API leaves out."""
    return {k: v for k, v in (fields or {}).items() if k not in HIDDEN_SOURCE_FIELDS}


def run_requested(op: Operator, source_id: str) -> dict[str, Any]:
    """Ask for a run of the source now, as the person (`sourceflow run SOURCE`)."""
    return {"source_id": source_id, "event_id": runs.request_run(op.config, op.db, source_id)}


def run_show(op: Operator, run: str) -> dict[str, Any]:
    """The run as `sourceflow runs show` sees it (ops/run_view.py: its fields, who asked,
    approved and cancelled, each state's visits from the execution history), the execution's
    status, and the state machine's drawing with each state's status: its last visit's, or not
    reached."""
    record = run_view.run_record(op.db, run)
    arn = run_view.execution_arn_of(record) if record is not None else None
    # The execution's status first, the run after it: an execution seen ended has written its
    # ledger row already, so the page never shows an ended execution beside a run still
    # `running` (and stops following it only when both have ended).
    described = op.client("stepfunctions").describe_execution(executionArn=arn) if arn else None
    shown = run_view.show_run(op.config, op.db, run)
    statuses = dict.fromkeys(DRAWN_DEFINITION["States"], str(run_view.StepStatus.NOT_REACHED))
    statuses.update({visit.step: str(visit.status) for visit in shown.steps or ()})
    return {
        "run": shown.run,
        "execution_status": described["status"] if described else None,
        "steps": statuses,
        "steps_unavailable": shown.steps_unavailable,
        "drawing": graph.draw(DRAWN_DEFINITION),
    }


def cancel(op: Operator, run: str, *, reason: str) -> dict[str, Any]:
    """Ask RUN to stop, as the person (`sourceflow cancel`): the ledger records who and why."""
    if not reason.strip():
        raise OperatorError(f"run {run}: say why it is cancelled (a reason is required)")
    asked = runs.cancel_run(op.db, TaskCallbacks(op.client("stepfunctions")), run, reason=reason)
    return {key: asked.get(key) for key in CANCEL_FIELDS}


# How a workflow task's status colours its box (the run page's colours; `skipped` its own).
TASK_RUNNING = "running"
_TASK_COLOURS = {
    TaskStatus.SUCCEEDED: run_view.StepStatus.SUCCEEDED,
    TaskStatus.FAILED: run_view.StepStatus.FAILED,
    TaskStatus.SKIPPED: TaskStatus.SKIPPED,
    TASK_RUNNING: run_view.StepStatus.IN_PROGRESS,
}
WORKFLOW_RUNS_LISTED = 50


def workflows_list(op: Operator) -> dict[str, Any]:
    """The registered workflows (`sourceflow workflow list`) and their newest runs
    (`sourceflow workflow runs`)."""
    with op.db.transaction() as cur:
        return {
            "workflows": workflow_store.list_workflows(cur),
            "runs": workflow_store.runs(cur, None, WORKFLOW_RUNS_LISTED),
        }


def workflow_run_show(op: Operator, run: str) -> dict[str, Any]:
    """A workflow run as `sourceflow workflow show` sees it, and its version's tasks drawn,
    each coloured by its status (a task not reached yet: not reached)."""
    shown = workflows.show_run(op.db, run)
    statuses = {
        task["task"]: str(_TASK_COLOURS.get(task["status"], run_view.StepStatus.NOT_REACHED))
        for task in shown["tasks"]
    }
    drawn = graph.workflow_graph(shown["definition"]["tasks"])
    return {**shown, "statuses": statuses, "drawing": graph.draw(drawn, graph.task_edges)}


def definition_drawn() -> dict[str, Any]:
    """The state machine's definition as the file has it (its placeholders filled with a
    stand-in: the drawing needs only its states and transitions)."""
    return statemachine.render(dict.fromkeys(statemachine.placeholders(), 0))


DRAWN_DEFINITION = definition_drawn()


def runs_over_time(
    op: Operator, *, days: int = DEFAULT_CHART_DAYS, now: datetime | None = None
) -> dict[str, Any]:
    """The runs of the last `days` days, newest first, and per source their count, failures,
    records and durations, drawn as a chart."""
    if not 1 <= days <= MAX_CHART_DAYS:
        raise OperatorError(f"days={days}: give a number of days from 1 to {MAX_CHART_DAYS}")
    now = now or utc_now()
    since = now - timedelta(days=days)
    listed = runs.runs_list(op.db, since=since, limit=CHART_RUNS)
    per_source = charts.per_source(listed)
    return {
        "days": days,
        "runs": listed,
        "per_source": per_source,
        "chart": charts.timeline(listed, since=since, until=now),
        "totals": charts.totals(per_source),
    }


def approvals_waiting(op: Operator) -> list[dict[str, Any]]:
    return [_approval(row) for row in approvals.list_waiting(op.db)]


def approve(op: Operator, run: str) -> dict[str, Any]:
    """Approve RUN's Re-specs query as the person; the database refuses the one who asked."""
    decided = approvals.approve(op.db, TaskCallbacks(op.client("stepfunctions")), run)
    return {**_approval(decided), "decision": "approved", "decided_by": decided["decided_by"]}


def reject(op: Operator, run: str, *, reason: str) -> dict[str, Any]:
    if not reason.strip():
        raise OperatorError(f"run {run}: say why it is rejected (a reason is required)")
    decided = approvals.reject(op.db, TaskCallbacks(op.client("stepfunctions")), run, reason=reason)
    return {**_approval(decided), "decision": "rejected", "decided_by": decided["decided_by"]}


def _approval(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: row.get(key) for key in APPROVAL_FIELDS}


def dead_letters(op: Operator) -> list[dict[str, Any]]:
    return dlq.list_dead_letters(op.client("sqs"), op.db, op.config.names, SERVICES)


def dead_letters_replayed(op: Operator, queue: str) -> list[dict[str, Any]]:
    """`sourceflow dlq replay QUEUE`: each dead letter back to its work queue, parked, or left."""
    return dlq.replay(
        op.client("sqs"),
        op.client("stepfunctions"),
        op.db,
        op.config.names,
        dlq.resolve_service(queue),
    )


def status_report(op: Operator) -> dict[str, Any]:
    return status.status(op.config)


def as_json(value: Any) -> Any:
    """A JSON document of an API answer, as every `sourceflow … --json` shows its values (ISO Z
    times, durations, numbers: ops/output.py), a drawing or a chart as its parts."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return json_value(value)
