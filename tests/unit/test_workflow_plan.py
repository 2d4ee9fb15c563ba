"""What `sourceflow apply` plans for a file's workflows (ops/workflows.py), and how
`workflow run --var` reads its values: pure, no database."""

from __future__ import annotations

from typing import Any

import pytest

from ops.config import OperatorError
from ops.workflows import (
    Action,
    Registered,
    changes_said,
    given_variables,
    in_contract_order,
    plan_workflows,
)
from shared.rules.workflows import Workflow, check_workflow


def a_workflow(name: str, message: str = "m") -> Workflow:
    entry = {
        "name": name,
        "tasks": [{"name": "t", "kind": "notify", "subject": "s", "message": message}],
    }
    return check_workflow(entry, sources=(), sql_targets=())


def registered(workflow: Workflow, version: int = 1, **changes: Any) -> Registered:
    return Registered(
        workflow.name, version, changes.get("enabled", True), workflow.definition_hash
    )


def test_a_new_workflow_is_version_1_a_changed_one_the_next_an_equal_one_nothing() -> None:
    same, changed = a_workflow("same"), a_workflow("changed", "new text")
    known = [registered(same, 3), registered(a_workflow("changed"), 4)]

    plan = plan_workflows(known, [same, changed, a_workflow("added")])

    assert [(c.name, c.action, c.version) for c in plan] == [
        ("changed", Action.NEW_VERSION, 5),
        ("added", Action.ADD, 1),
    ]


def test_a_dropped_workflow_is_disabled_and_enabled_again_when_listed() -> None:
    kept, dropped = a_workflow("kept"), a_workflow("dropped")

    assert [
        (c.name, c.action) for c in plan_workflows([registered(kept), registered(dropped)], [kept])
    ] == [("dropped", Action.DISABLE)]
    assert [
        (c.name, c.action, c.version)
        for c in plan_workflows([registered(dropped, 2, enabled=False)], [dropped])
    ] == [("dropped", Action.ENABLE, 2)]
    assert plan_workflows([registered(dropped, enabled=False)], []) == []


def test_the_plan_is_said_one_line_a_change() -> None:
    plan = plan_workflows([], [a_workflow("campaign")])

    said = changes_said(plan, origin="wf.yaml", dry_run=True, who="alice")

    assert said.splitlines() == [
        "workflows in wf.yaml: 1 change(s)",
        "  + add campaign (version 1)",
        "dry run: nothing changed",
    ]
    assert changes_said([], origin="wf.yaml", dry_run=False, who="alice") == (
        "no changes: the registered workflows match wf.yaml"
    )


def test_a_var_reads_as_json_when_it_is_a_number_a_boolean_or_null_and_as_text_otherwise() -> None:
    given = given_variables(["n=5", "x=1.5", "on=true", "none=null", "region=eu", "list=[1]", "e="])

    assert given == {
        "n": 5,
        "x": 1.5,
        "on": True,
        "none": None,
        "region": "eu",
        "list": "[1]",
        "e": "",
    }


@pytest.mark.parametrize("pair", ["no-equals", "Upper=1", "=1"])
def test_a_var_not_written_name_equals_value_is_refused(pair: str) -> None:
    with pytest.raises(OperatorError, match="write NAME=VALUE"):
        given_variables([pair])


def test_an_exported_definition_lists_its_fields_in_the_contract_s_order() -> None:
    stored = {  # as jsonb gives it back: shorter keys first
        "name": "w",
        "tasks": [{"into": "n", "kind": "sql", "name": "t", "query": "SELECT 1", "target": "w"}],
        "variables": {"b": 1, "a": 2},
        "schedule_interval": "1h",
    }

    ordered = in_contract_order(stored)

    assert list(ordered) == ["name", "variables", "schedule_interval", "tasks"]
    assert list(ordered["tasks"][0]) == ["name", "kind", "target", "query", "into"]
    assert ordered == stored
