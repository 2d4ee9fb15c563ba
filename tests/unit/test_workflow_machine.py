"""The workflow compiler (infra/workflow_machine.py): every way on of the compiled machine
leads to a state, every state is reached, and the machine runs exactly the tasks the edges,
`when` and `if_set` say — by hand cases and over random workflows (an evaluator of the ASL it
writes: tests/unit/asl_evaluator.py)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from infra.resources import Names
from infra.workflow_machine import (
    FAILED_RUN,
    FINISH_KIND,
    MachineWiring,
    compile_workflow,
)
from shared.rules.workflows import (
    EdgeOn,
    InvalidWorkflow,
    TaskStatus,
    When,
    Workflow,
    check_workflow,
    edge_holds,
    topological_order,
)
from tests.unit import asl_evaluator

WIRING = MachineWiring("https://sqs.example/tasks")


def a_checked_workflow(*tasks: Mapping[str, Any], **fields: Any) -> Workflow:
    return check_workflow(
        {"name": "wf", "tasks": list(tasks), **fields}, sources={"src"}, sql_targets={"warehouse"}
    )


def a_workflow(*tasks: Mapping[str, Any], **fields: Any) -> Workflow:
    """A workflow of notify tasks (they need no variable) with these names and edges."""
    return a_checked_workflow(
        *({"kind": "notify", "subject": "s", "message": "m", **task} for task in tasks), **fields
    )


def transitions(state: Mapping[str, Any]) -> Iterator[str]:
    yield from filter(None, [state.get("Next"), state.get("Default")])
    yield from (choice["Next"] for choice in state.get("Choices", ()))
    yield from (catch["Next"] for catch in state.get("Catch", ()))


def check_structure(machine: Mapping[str, Any]) -> None:
    """Every Next/Default/Catch names a state of the same scope, every state is reached from
    StartAt, and only Succeed, Fail and End states end."""
    states = machine["States"]
    reached, waiting = set(), [machine["StartAt"]]
    while waiting:
        name = waiting.pop()
        if name in reached:
            continue
        assert name in states, f"{name!r} is named but is no state"
        reached.add(name)
        state = states[name]
        targets = list(transitions(state))
        assert targets or state.get("End") or state["Type"] in ("Succeed", "Fail"), name
        waiting.extend(targets)
        for branch in state.get("Branches", ()):
            check_structure(branch)
    assert reached == set(states), f"never reached: {set(states) - reached}"


def all_state_names(machine: Mapping[str, Any]) -> list[str]:
    names = []
    for name, state in machine["States"].items():
        names.append(name)
        for branch in state.get("Branches", ()):
            names += all_state_names(branch)
    return names


def play(
    workflow: Workflow, outcomes: Mapping[str, str], variables: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, str], list[str]]:
    """Run the compiled machine, each task ending as `outcomes` says (default succeeded);
    returns the execution's status, the statuses the finish was sent, the tasks asked for."""
    asked: list[str] = []
    finish: dict[str, Any] = {}

    def answer(request: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
        if request["kind"] == FINISH_KIND:
            finish.update(request["statuses"])
            return "succeeded", {}
        asked.append(request["task"])
        outputs = {name: "x" for name in workflow.task(request["task"]).outputs}
        status = outcomes.get(request["task"], "succeeded")
        return status, (outputs if status == "succeeded" else None)

    machine = compile_workflow(workflow, 1, WIRING)
    status, _ = asl_evaluator.run(machine, {"variables": dict(variables or {})}, answer)
    return status, finish, asked


def expected_statuses(
    workflow: Workflow, outcomes: Mapping[str, str], variables: Mapping[str, Any]
) -> dict[str, str]:
    """The interface's rule, written here on its own: a task runs iff its edges hold (all, or
    any) and its if_set variables hold values; otherwise it is skipped."""
    statuses: dict[str, str] = {}
    for task in topological_order(workflow):
        held = [edge_holds(edge.on, TaskStatus(statuses[edge.task])) for edge in task.after]
        runs = not held or (all(held) if task.when is When.ALL else any(held))
        runs = runs and all(variables.get(name) is not None for name in task.if_set)
        statuses[task.name] = outcomes.get(task.name, "succeeded") if runs else "skipped"
    return statuses


# -- hand cases --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on", "first_ends", "second_runs"),
    [
        ("success", "succeeded", True),
        ("success", "failed", False),
        ("failure", "succeeded", False),
        ("failure", "failed", True),
        ("completion", "succeeded", True),
        ("completion", "failed", True),
    ],
)
def test_an_edge_holds_on_the_end_it_names(on: str, first_ends: str, second_runs: bool) -> None:
    workflow = a_workflow(
        {"name": "first"}, {"name": "second", "after": [{"task": "first", "on": on}]}
    )

    _, statuses, asked = play(workflow, {"first": first_ends})

    assert statuses == {"first": first_ends, "second": "succeeded" if second_runs else "skipped"}
    assert ("second" in asked) is second_runs


@pytest.mark.parametrize(
    ("when", "a_ends", "b_ends", "runs"),
    [
        ("all", "succeeded", "succeeded", True),
        ("all", "succeeded", "failed", False),
        ("all", "failed", "failed", False),
        ("any", "succeeded", "failed", True),
        ("any", "failed", "failed", False),
        ("any", "succeeded", "succeeded", True),
    ],
)
def test_all_needs_every_edge_and_any_needs_one(
    when: str, a_ends: str, b_ends: str, runs: bool
) -> None:
    workflow = a_workflow(
        {"name": "a"}, {"name": "b"}, {"name": "joined", "after": ["a", "b"], "when": when}
    )

    _, statuses, _ = play(workflow, {"a": a_ends, "b": b_ends})

    assert statuses["joined"] == ("succeeded" if runs else "skipped")


def test_a_skipped_task_satisfies_no_edge_not_even_completion() -> None:
    workflow = a_workflow(
        {"name": "a"},
        {"name": "b", "after": ["a"]},
        {"name": "c", "after": [{"task": "b", "on": "completion"}]},
        {"name": "d", "after": [{"task": "b", "on": "failure"}]},
    )

    _, statuses, asked = play(workflow, {"a": "failed"})

    assert statuses == {"a": "failed", "b": "skipped", "c": "skipped", "d": "skipped"}
    assert asked == ["a"]


def test_if_set_skips_a_task_whose_variable_is_null() -> None:
    workflow = a_checked_workflow(
        {"name": "check", "kind": "sql", "target": "warehouse", "query": "SELECT 1", "into": "id"},
        {"name": "load", "kind": "ingest", "source": "src", "after": ["check"], "if_set": ["id"]},
    )

    machine = compile_workflow(workflow, 1, WIRING)

    def answer_with(value: Any) -> asl_evaluator.Answer:
        def answer(request: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
            if request["kind"] == FINISH_KIND:
                seen["statuses"] = request["statuses"]
                return "succeeded", {}
            return "succeeded", {"id": value} if request["task"] == "check" else {}

        return answer

    seen: dict[str, Any] = {}
    asl_evaluator.run(machine, {"variables": {}}, answer_with(None))
    assert seen["statuses"]["load"] == "skipped"
    asl_evaluator.run(machine, {"variables": {}}, answer_with(42))
    assert seen["statuses"]["load"] == "succeeded"


def test_the_execution_fails_when_a_task_failed_even_if_a_recovery_task_ran() -> None:
    workflow = a_workflow(
        {"name": "load"}, {"name": "recover", "after": [{"task": "load", "on": "failure"}]}
    )

    status, statuses, _ = play(workflow, {"load": "failed"})

    assert statuses == {"load": "failed", "recover": "succeeded"}
    assert status == "FAILED"
    assert compile_workflow(workflow, 1, WIRING)["States"][FAILED_RUN]["Type"] == "Fail"


def test_tasks_no_path_joins_run_in_one_parallel_state() -> None:
    workflow = a_workflow(
        {"name": "check"},
        {"name": "a", "after": ["check"]},
        {"name": "b", "after": ["check"]},
        {"name": "c", "after": ["a", "b"]},
    )

    machine = compile_workflow(workflow, 1, WIRING)

    parallel = [state for state in machine["States"].values() if state["Type"] == "Parallel"]
    assert [[branch["StartAt"] for branch in p["Branches"]] for p in parallel] == [
        ["Guard a", "Guard b"]
    ]


def test_each_task_message_says_the_workflow_its_version_the_task_and_its_spec() -> None:
    workflow = a_checked_workflow({"name": "load", "kind": "ingest", "source": "src"})

    body = compile_workflow(workflow, 7, WIRING)["States"]["load"]["Parameters"]["MessageBody"]

    assert body["schema"] == "workflow-task-request"
    assert body["workflow"] == "wf" and body["workflow_version"] == 7
    assert body["task"] == "load" and body["kind"] == "ingest"
    assert body["spec"] == {"source": "src", "flow": "normal"}
    assert body["variables.$"] == "$.variables"
    assert body["execution_arn.$"] == "$$.Execution.Id"  # sourceflow dlq checks it


# -- any workflow ------------------------------------------------------------------------------


@st.composite
def task_lists(draw: st.DrawFn, most: int = 8) -> list[dict[str, Any]]:
    """Up to `most` tasks t0, t1, …, each after some of the ones before it, on random ends,
    all or any, some only if the variable `flag` is set."""
    tasks = []
    for index in range(draw(st.integers(1, most))):
        before = draw(st.lists(st.integers(0, index - 1), unique=True, max_size=3)) if index else []
        edges = [{"task": f"t{p}", "on": draw(st.sampled_from(list(EdgeOn)))} for p in before]
        task: dict[str, Any] = {"name": f"t{index}"}
        if edges:
            task["after"] = edges
            task["when"] = draw(st.sampled_from(list(When)))
        if draw(st.booleans()):
            task["if_set"] = ["flag"]
        tasks.append(task)
    return tasks


@st.composite
def workflows(draw: st.DrawFn) -> tuple[Workflow, dict[str, str], dict[str, Any]]:
    """A random workflow apply accepts, how each task ends if it runs, and `flag` set or null."""
    tasks = draw(task_lists())
    try:
        workflow = a_workflow(*tasks, variables={"flag": None})
    except InvalidWorkflow:  # a task that can never run: the test below
        reject()
    outcomes = {task["name"]: draw(st.sampled_from(["succeeded", "failed"])) for task in tasks}
    flag = draw(st.sampled_from([None, "on"]))
    return workflow, outcomes, {"flag": flag}


def ever_run(tasks: list[dict[str, Any]]) -> set[str]:
    """The tasks that run for some way the others end and `flag` is, by the rule alone."""
    ran: set[str] = set()
    for ends in itertools.product(["succeeded", "failed"], repeat=len(tasks)):
        for flag in (None, "on"):
            statuses: dict[str, str] = {}
            for task, end in zip(tasks, ends, strict=True):
                held = [
                    edge_holds(EdgeOn(edge["on"]), TaskStatus(statuses[edge["task"]]))
                    for edge in task.get("after", ())
                ]
                runs = not held or (all(held) if task.get("when", "all") == "all" else any(held))
                runs = runs and (flag is not None or "if_set" not in task)
                statuses[task["name"]] = end if runs else "skipped"
            ran |= {name for name, status in statuses.items() if status != "skipped"}
    return ran


@settings(max_examples=150, deadline=None)
@given(task_lists(most=6))
def test_apply_refuses_exactly_the_tasks_that_run_for_no_way_the_others_end(
    tasks: list[dict[str, Any]],
) -> None:
    try:
        a_workflow(*tasks, variables={"flag": None})
        refused: set[str] = set()
    except InvalidWorkflow as refusal:
        refused = set(re.findall(r"task '(\w+)' can never run", str(refusal)))
        assert refused, refusal

    assert refused == {task["name"] for task in tasks} - ever_run(tasks)


@settings(max_examples=150, deadline=None)
@given(workflows())
def test_the_compiled_machine_runs_what_the_rule_says_for_any_workflow(
    drawn: tuple[Workflow, dict[str, str], dict[str, Any]],
) -> None:
    workflow, outcomes, variables = drawn
    machine = compile_workflow(workflow, 1, WIRING)
    check_structure(machine)
    names = all_state_names(machine)
    assert len(names) == len(set(names)), "state names repeat"
    assert max(map(len, names)) <= 80

    status, statuses, asked = play(workflow, outcomes, variables)

    expected = expected_statuses(workflow, outcomes, variables)
    assert statuses == expected
    assert sorted(asked) == sorted(name for name, end in expected.items() if end != "skipped")
    assert status == ("FAILED" if "failed" in expected.values() else "SUCCEEDED")


def test_a_machine_name_fits_step_functions_for_the_longest_names() -> None:
    assert len(Names("production").workflow_state_machine("w" * 40, 99_999)) <= 80
