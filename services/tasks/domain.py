"""The tasks service's decisions, pure: what an ingest task asks for and answers, how a notify
task's text is filled, which parameters a sql task binds, and how a workflow run ended.

The state machine decides which tasks run (shared/rules/workflows.py says how); this module
only words what one task does and what it answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from shared.errors import PermanentError
from shared.rules.flows import FlowParams, FlowType
from shared.rules.workflows import (
    INGEST_OUTPUTS,
    WORKFLOW_TASK_ERROR,
    Task,
    TaskKind,
    TaskStatus,
    WorkflowRunStatus,
    used_variables,
)
from shared.store.runs import OPEN_RUN_STATUSES, RunStatus
from shared.timefmt import isoformat

FINISH = "finish"
"""The kind of the compiled machine's last callback: the run's end, not a task of its own."""
RUNNING = "running"
"""A task's status in workflow_task_run while it works or waits for its child run (its end is
a TaskStatus; migration 0022's CHECK allows these)."""


class TaskFailed(PermanentError):
    """The task failed for a reason of its own (its query, its source, its text): reported as
    WORKFLOW_TASK_ERROR, which the compiled machine catches to run the recovery tasks."""

    error_name = WORKFLOW_TASK_ERROR


# -- ingest --------------------------------------------------------------------------------------

# The flows an ingest task may name (shared/rules/workflows.py INGEST_FLOWS), as runs know them.
_FLOWS = {
    "normal": FlowType.NORMAL,
    "respecs": FlowType.RESPECS,
    "backdated": FlowType.FULL_LOAD,
    "sold": FlowType.SOLD,
}


def params_to_write(source_id: str, asked: str, current: FlowParams) -> dict[str, Any] | None:
    """The batch_execution_params to write before the child run is asked for, or None when the
    source already runs the flow the task asks for. A Re-specs flow needs its query and a
    second person's approval, which a workflow cannot give: it must be set beforehand."""
    flow = _FLOWS[asked]
    if current.flow_type is flow:
        return None
    if flow is FlowType.RESPECS:
        raise TaskFailed(
            f"source {source_id!r} runs its {current.flow_type.value} flow, and a workflow cannot "
            "set a Re-specs flow (it needs a query and a second person's approval); set it with "
            "`sourceflow flow set` before the workflow runs"
        )
    return FlowParams(flow).canonical()


def run_ended(run: Mapping[str, Any] | None) -> bool:
    return run is not None and run["status"] not in OPEN_RUN_STATUSES


@dataclass(frozen=True)
class Answer:
    """How a task ends: its status, the variables it sets (success only), what it did, and
    why it failed."""

    status: TaskStatus
    variables: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def child_answer(task: str, run: Mapping[str, Any]) -> Answer:
    """An ingest task's answer from its child run's ledger row, once the run ended."""
    detail = {"child_run_id": run["execution_name"], "run_status": run["status"]}
    if run["status"] != RunStatus.SUCCEEDED:
        why = run["error_detail"] or run["error"] or run["status"]
        return Answer(
            TaskStatus.FAILED,
            detail=detail,
            error=f"run {run['execution_name']} of source {run['source_id']!r} "
            f"ended {run['status']}: {why}",
        )
    return Answer(
        TaskStatus.SUCCEEDED,
        variables={
            f"{task}_{output}": value
            for output, value in zip(
                INGEST_OUTPUTS,
                (
                    run["records"] or 0,
                    _stamp(run["window_start"]),
                    _stamp(run["window_end"]),
                    _stamp(run["cursor_after"]),
                ),
                strict=True,
            )
        },
        detail=detail,
    )


def _stamp(value: datetime | None) -> str | None:
    return isoformat(value) if value is not None else None


# -- sql -----------------------------------------------------------------------------------------


def query_parameters(
    task: str, spec: Mapping[str, Any], variables: Mapping[str, Any]
) -> dict[str, Any]:
    """The variables a sql task's query names as `%(name)s`, bound by the driver (never
    written into the text); a name no variable has fails the task by name."""
    return {name: variables[name] for name in _known(task, TaskKind.SQL, spec, variables)}


def _known(
    task: str, kind: TaskKind, spec: Mapping[str, Any], variables: Mapping[str, Any]
) -> list[str]:
    """The variables the task's spec names (as `apply` reads them), each one the run holds."""
    named = used_variables(Task(task, kind, spec))
    unknown = [name for name in named if name not in variables]
    if unknown:
        raise TaskFailed(
            f"task {task!r} names {', '.join(map(repr, unknown))}, which no variable of the "
            f"run holds (it has {sorted(variables)}); declare the variable or set it in an "
            "earlier task"
        )
    return named


def variable_value(value: Any) -> Any:
    """A first column's value as a JSON variable: numbers stay numbers, times and dates become
    ISO text, anything else its text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


# -- notify --------------------------------------------------------------------------------------


def notification(
    task: str, spec: Mapping[str, Any], variables: Mapping[str, Any]
) -> tuple[str, str]:
    """A notify task's subject and message, each `{name}` replaced by the variable's value
    (null reads as empty); a placeholder no variable fills fails the task by name. `apply`
    allowed no braces but placeholders (shared/rules/workflows.py)."""
    named = _known(task, TaskKind.NOTIFY, spec, variables)
    values = {name: "" if variables[name] is None else variables[name] for name in named}
    return spec["subject"].format_map(values), spec["message"].format_map(values)


# -- finish --------------------------------------------------------------------------------------


def failed_tasks(statuses: Mapping[str, str]) -> list[str]:
    return sorted(task for task, status in statuses.items() if status == TaskStatus.FAILED)


def run_status(statuses: Mapping[str, str]) -> WorkflowRunStatus:
    """A workflow run failed iff any of its tasks failed (its recovery tasks ran all the same)."""
    return WorkflowRunStatus.FAILED if failed_tasks(statuses) else WorkflowRunStatus.SUCCEEDED


def alert_text(workflow: str, run_id: str, failed: list[str], errors: Mapping[str, str]) -> str:
    """The alert of a failed workflow run: which tasks failed and why, one line each."""
    lines = [f"workflow {workflow} run {run_id} failed: {', '.join(failed)}"]
    lines += [f"- {task}: {errors[task]}" for task in failed if errors.get(task)]
    return "\n".join(lines)
