"""A workflow version compiled to a Step Functions state machine (JSONPath only: the local
emulator runs neither JSONata nor `Assign` variables, see LOCAL_EMULATOR.md).

Pure: a checked workflow (shared/rules/workflows.py) in, an ASL definition out. Nothing in
Python runs the workflow: the machine decides what runs, and the tasks service (services/tasks)
does one task when the machine asks, answering its callback.

The machine's state is `{"variables": {...}, "statuses": {task: succeeded|failed|skipped}}`.
The tasks go level by level (a task's level is one more than its predecessors' highest), so
every status a guard reads is set before it; the tasks of a level, between which no path runs,
run at once in a Parallel state whose branches' states are joined after it. Each task is:

    Guard <t> (Choice over its edges and if_set) ──► <t> (callback task) ──► Merge <t> ──►
        │ otherwise                                  │ WorkflowTaskFailed, States.ALL
        ▼                                            ▼                    Succeeded <t>
    Skipped <t>                                  Failed <t>

`Merge <t>` merges the variables the task's success set into `$.variables`. The last state is
the `finish` callback, which records the run's end (and alerts on failure); then the execution
itself fails when a task failed, so that its status says the run's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.rules.workflows import (
    WORKFLOW_TASK_ERROR,
    EdgeOn,
    Task,
    TaskStatus,
    When,
    Workflow,
    levels,
)

TASK_REQUEST = "workflow-task-request"
FINISH_KIND = "finish"
START = "Start"
FINISH = "Finish"
OUTCOME = "Outcome"
FAILED_RUN = "Workflow failed"
FAILED_FINISH = "Finish failed"
SUCCEEDED_RUN = "Workflow succeeded"
# The name a failed workflow run's execution fails with.
WORKFLOW_FAILED_ERROR = "WorkflowFailed"
_CALLBACK = "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
_ON = {
    EdgeOn.SUCCESS: (TaskStatus.SUCCEEDED,),
    EdgeOn.FAILURE: (TaskStatus.FAILED,),
    EdgeOn.COMPLETION: (TaskStatus.SUCCEEDED, TaskStatus.FAILED),
}


@dataclass(frozen=True)
class TaskTimeouts:
    """How long each kind of task may take before the machine counts it failed
    (States.Timeout): an ingest task waits for its whole child run."""

    ingest_seconds: int = 24 * 3600
    sql_seconds: int = 15 * 60
    notify_seconds: int = 5 * 60
    finish_seconds: int = 5 * 60

    def of(self, kind: str) -> int:
        return int(getattr(self, f"{kind}_seconds"))


@dataclass(frozen=True)
class MachineWiring:
    """What a compiled machine names outside itself: the tasks service's queue."""

    tasks_queue_url: str
    timeouts: TaskTimeouts = TaskTimeouts()


def compile_workflow(workflow: Workflow, version: int, wiring: MachineWiring) -> dict[str, Any]:
    """The ASL definition of `workflow` at `version`."""
    states: dict[str, Any] = {
        START: {
            "Type": "Pass",
            "Comment": "A run starts with its variables (defaults and --var) and no status.",
            "Parameters": {"variables.$": "$.variables", "statuses": {}},
        }
    }
    leading_on = [START]  # the states whose Next is the next level's first
    for number, level in enumerate(levels(workflow)):
        if len(level) == 1:
            first, level_states, ends = _chain(level[0], workflow, version, wiring)
            states.update(level_states)
        else:
            first = f"Level {number}"
            joins = _join(number, len(level))
            states[first] = {
                "Type": "Parallel",
                "Comment": "Tasks no path joins run at once; each branch returns its state.",
                "Branches": [_branch(task, workflow, version, wiring) for task in level],
                "ResultSelector": {
                    f"b{index}.$": f"States.ArrayGetItem($, {index})" for index in range(len(level))
                },
                "ResultPath": "$.branches",
                "Next": next(iter(joins)),
            }
            states.update(joins)
            ends = [f"Join level {number}"]
        for name in leading_on:
            states[name]["Next"] = first
        leading_on = ends
    for name in leading_on:
        states[name]["Next"] = FINISH
    states.update(_finish(workflow, version, wiring))
    return {
        "Comment": f"sourceflow workflow {workflow.name} v{version} (infra/workflow_machine.py)",
        "StartAt": START,
        "States": states,
    }


def _chain(
    task: Task, workflow: Workflow, version: int, wiring: MachineWiring
) -> tuple[str, dict[str, Any], list[str]]:
    """A task's states: (the first, all of them, its ends: succeeded, failed and, when it has
    a guard, skipped), the ends' Next left to the caller."""
    ends = [f"Succeeded {task.name}", f"Failed {task.name}"]
    states: dict[str, Any] = {
        task.name: _callback(task, workflow, version, wiring),
        f"Merge {task.name}": {
            "Type": "Pass",
            "Comment": "The variables the task's success set join the run's.",
            "Parameters": {
                "variables.$": "States.JsonMerge($.variables, $.result.variables, false)",
                "statuses.$": "$.statuses",
            },
            "Next": ends[0],
        },
        ends[0]: _status(task, TaskStatus.SUCCEEDED),
        ends[1]: _status(task, TaskStatus.FAILED),
    }
    guard = _guard(task)
    if guard is None:
        return task.name, states, ends
    ends.append(f"Skipped {task.name}")
    states[ends[2]] = _status(task, TaskStatus.SKIPPED)
    states[f"Guard {task.name}"] = {
        "Type": "Choice",
        "Choices": [{**guard, "Next": task.name}],
        "Default": ends[2],
    }
    return f"Guard {task.name}", states, ends


def _branch(task: Task, workflow: Workflow, version: int, wiring: MachineWiring) -> dict[str, Any]:
    first, states, ends = _chain(task, workflow, version, wiring)
    for end in ends:
        states[end]["End"] = True
    return {"StartAt": first, "States": states}


def _join(level: int, branches: int) -> dict[str, Any]:
    """After a Parallel state, its branches' variables and statuses merged, one more branch a
    step; the last step leaves the branches out (each branch holds what it started with plus
    what its own task set, and no two tasks set the same variable: shared/rules/workflows.py).
    The steps in order; the last is `Join level <n>`."""
    names = [f"Join level {level} ({step})" for step in range(1, branches - 1)]
    names.append(f"Join level {level}")
    states: dict[str, Any] = {}
    for step, name in enumerate(names, start=1):
        base = "$.branches.b0" if step == 1 else "$"
        parameters = {
            part + ".$": f"States.JsonMerge({base}.{part}, $.branches.b{step}.{part}, false)"
            for part in ("variables", "statuses")
        }
        if name != names[-1]:
            parameters["branches.$"] = "$.branches"
        states[name] = {"Type": "Pass", "Parameters": parameters}
        if step > 1:
            states[names[step - 2]]["Next"] = name
    return states


def _guard(task: Task) -> dict[str, Any] | None:
    """The Choice rule under which the task runs (None: it always does): its edges over the
    statuses, all or any of them, and each of its if_set variables holding a value."""
    edges = [_either(edge.task, _ON[edge.on]) for edge in task.after]
    rules = []
    if edges:
        rules.append(_combined("And" if task.when is When.ALL else "Or", edges))
    for variable in task.if_set:
        path = f"$.variables.{variable}"
        rules.append(
            {"And": [{"Variable": path, "IsPresent": True}, {"Variable": path, "IsNull": False}]}
        )
    return _combined("And", rules) if rules else None


def _either(predecessor: str, statuses: tuple[TaskStatus, ...]) -> dict[str, Any]:
    path = f"$.statuses.{predecessor}"
    return _combined(
        "Or", [{"Variable": path, "StringEquals": status.value} for status in statuses]
    )


def _combined(operator: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return rules[0] if len(rules) == 1 else {operator: rules}


def _status(task: Task, status: TaskStatus) -> dict[str, Any]:
    return {
        "Type": "Pass",
        "Result": status.value,
        "ResultPath": f"$.statuses.{task.name}",
    }


def _message(workflow: Workflow, version: int, kind: str) -> dict[str, Any]:
    """The workflow-task-request fields every callback of the machine sends."""
    return {
        "schema": TASK_REQUEST,
        "version": 1,
        "correlation_id.$": "$$.Execution.Name",
        "produced_at.$": "$$.State.EnteredTime",
        "task_token.$": "$$.Task.Token",
        "workflow": workflow.name,
        "workflow_version": version,
        "workflow_run_id.$": "$$.Execution.Name",
        # For `sourceflow dlq`: whether a dead-lettered task's execution still waits for it.
        "execution_arn.$": "$$.Execution.Id",
        "kind": kind,
        "variables.$": "$.variables",
    }


def _callback(
    task: Task, workflow: Workflow, version: int, wiring: MachineWiring
) -> dict[str, Any]:
    catch = {"ResultPath": f"$.statuses.{task.name}", "Next": f"Failed {task.name}"}
    return {
        "Type": "Task",
        "Comment": f"{task.kind.value}: the tasks service does it and answers.",
        "Resource": _CALLBACK,
        "Parameters": {
            "QueueUrl": wiring.tasks_queue_url,
            "MessageBody": {
                **_message(workflow, version, task.kind.value),
                "task": task.name,
                "spec": dict(task.spec),
            },
        },
        "TimeoutSeconds": wiring.timeouts.of(task.kind.value),
        "ResultPath": "$.result",
        "Next": f"Merge {task.name}",
        # No Retry on a callback task (LOCAL_EMULATOR.md); a timeout is a failure like any.
        "Catch": [
            {"ErrorEquals": [WORKFLOW_TASK_ERROR], **catch},
            {"ErrorEquals": ["States.ALL"], **catch},
        ],
    }


def _finish(workflow: Workflow, version: int, wiring: MachineWiring) -> dict[str, Any]:
    failed = [
        {"Variable": f"$.statuses.{task.name}", "StringEquals": TaskStatus.FAILED.value}
        for task in workflow.tasks
    ]
    return {
        FINISH: {
            "Type": "Task",
            "Comment": "The tasks service records the run's end, and alerts if a task failed.",
            "Resource": _CALLBACK,
            "Parameters": {
                "QueueUrl": wiring.tasks_queue_url,
                "MessageBody": {
                    **_message(workflow, version, FINISH_KIND),
                    "statuses.$": "$.statuses",
                },
            },
            "TimeoutSeconds": wiring.timeouts.of(FINISH_KIND),
            "ResultPath": None,
            "Next": OUTCOME,
            "Catch": [
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": FAILED_FINISH}
            ],
        },
        OUTCOME: {
            "Type": "Choice",
            "Comment": "The execution ends as the run did: failed if any task failed.",
            "Choices": [{**_combined("Or", failed), "Next": FAILED_RUN}],
            "Default": SUCCEEDED_RUN,
        },
        FAILED_RUN: {
            "Type": "Fail",
            "Error": WORKFLOW_FAILED_ERROR,
            "Cause": "a task of the workflow failed; `sourceflow workflow show RUN` says which",
        },
        FAILED_FINISH: {
            "Type": "Fail",
            "Error": "WorkflowFinishFailed",
            "Cause": "the tasks service did not record the run's end; see its logs",
        },
        SUCCEEDED_RUN: {"Type": "Succeed"},
    }
