"""Workflow definitions checked (shared/rules/workflows.py): what a schema cannot say is
refused by name — the workflow, the task and the fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ops.sources_file import dump_yaml, read_file
from shared.rules.workflows import (
    InvalidWorkflow,
    Workflow,
    check_workflow,
    guaranteed_successes,
    known_variables,
    levels,
    parse_sql_targets,
    run_variables,
    sql_problem,
)

SOURCES = {"orders", "listings"}
TARGETS = {"warehouse"}


def sql(name: str, query: str = "SELECT 1", **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": "sql", "target": "warehouse", "query": query, **fields}


def ingest(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": "ingest", "source": "orders", **fields}


def notify(name: str, message: str = "done", **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": "notify", "subject": "s", "message": message, **fields}


def checked(*tasks: dict[str, Any], **fields: Any) -> Workflow:
    return check_workflow(
        {"name": "campaign", "tasks": list(tasks), **fields}, sources=SOURCES, sql_targets=TARGETS
    )


def refusal(*tasks: dict[str, Any], **fields: Any) -> str:
    with pytest.raises(InvalidWorkflow) as refused:
        checked(*tasks, **fields)
    return str(refused.value)


def test_a_campaign_like_workflow_is_accepted_with_its_defaults_filled_in() -> None:
    workflow = checked(
        sql("check", into="campaign_id"),
        ingest("load", after=["check"], if_set=["campaign_id"]),
        notify("say", "{campaign_id}: {load_records} records", after=["load"]),
        variables={"region": "eu"},
        schedule_interval="1d",
    )

    assert workflow.task("load").spec == {"source": "orders", "flow": "normal"}
    assert workflow.task("check").outputs == ("campaign_id",)
    assert [[task.name for task in level] for level in levels(workflow)] == [
        ["check"],
        ["load"],
        ["say"],
    ]
    assert workflow.schedule_interval is not None


@pytest.mark.parametrize(
    ("tasks", "said"),
    [
        (
            [ingest("a", after=["b"]), ingest("b", after=["a"])],
            "tasks a -> b -> a run after each other in a cycle",
        ),
        ([ingest("a", after=["nope"])], "task 'a': after 'nope', which is no task"),
        ([ingest("a", after=["a"])], "task 'a': runs after itself"),
        ([ingest("a"), ingest("a")], "task 'a' is listed more than once"),
        (
            [ingest("a"), ingest("b", after=["a", {"task": "a", "on": "failure"}])],
            "names 'a' twice in after; use `on: completion`",
        ),
        ([ingest("a", source="nope")], "task 'a': no source 'nope'"),
        ([sql("a", target="prod")], "no SQL target 'prod'; the deployment's WORKFLOW_SQL_TARGETS"),
        ([sql("a", "SELECT 1; DROP TABLE x")], "task 'a': the query has 2 statements"),
        ([sql("a", "SELEC 1")], "task 'a': the query does not parse"),
        ([sql("a", "SELECT '100%'")], "has a % that binds nothing; write %%"),
        ([sql("a", "SELECT %(nope)s")], "task 'a' uses ['nope'], not sure to be set"),
        ([notify("a", "{nope}")], "task 'a' uses ['nope']"),
        ([notify("a", "{Bad name}")], "a notification's {…} names a variable"),
        ([ingest("a", if_set=["nope"])], "task 'a' uses ['nope']"),
    ],
)
def test_a_broken_workflow_is_refused_naming_the_workflow_the_task_and_the_fix(
    tasks: list[dict[str, Any]], said: str
) -> None:
    message = refusal(*tasks)

    assert message.startswith("workflow 'campaign': ")
    assert said in message


def test_the_contract_refuses_the_shape_first() -> None:
    message = refusal({"name": "a", "kind": "shell"})

    assert "tasks[0].kind" in message
    assert "workflow-definition.v1.schema.json" in message


def test_a_task_whose_edges_can_never_all_hold_is_refused() -> None:
    message = refusal(
        ingest("a"),
        ingest("b", after=["a"]),
        ingest("c", after=[{"task": "a", "on": "failure"}]),
        ingest("never", after=["b", "c"], when="all"),
        ingest("after_never", after=["never"]),
    )

    # b runs only when a succeeded, c only when it failed: never both.
    assert "task 'never' can never run" in message
    assert "task 'after_never' can never run" in message
    assert "task 'b'" not in message and "task 'c'" not in message


def test_a_variable_is_known_only_after_a_task_sure_to_have_set_it() -> None:
    workflow = checked(
        sql("check", into="id"),
        sql("on_success", after=["check"]),
        sql("on_failure", after=[{"task": "check", "on": "failure"}]),
        sql("either", after=["on_success", "on_failure"], when="any"),
        sql("both", after=["on_success", {"task": "check", "on": "completion"}]),
    )
    known = known_variables(workflow)

    assert "id" in known["on_success"]
    assert "id" not in known["on_failure"]
    # any: only what every edge assures; on_failure's run assures check failed, not succeeded.
    assert guaranteed_successes(workflow)["either"] == frozenset()
    assert "id" in known["both"]


def test_two_tasks_setting_one_variable_are_refused() -> None:
    message = refusal(sql("a", into="id"), sql("b", into="id"), variables={})

    assert "variable 'id' is set by tasks ['a', 'b']" in message


def test_a_task_may_not_overwrite_a_declared_variable() -> None:
    message = refusal(sql("a", into="id"), variables={"id": 1})

    assert "variable 'id' is set by tasks ['a'] and is a declared variable" in message


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"schedule_cron": "61 * * * *"}, "schedule: workflow 'campaign' schedule_cron"),
        ({"schedule_interval": "30s"}, "is under a minute"),
        ({"schedule_interval": "often"}, "is not a duration"),
    ],
)
def test_a_schedule_is_read_as_a_sources(fields: dict[str, Any], said: str) -> None:
    assert said in refusal(ingest("a"), **fields)


def test_a_query_binds_variables_by_name_and_reads_a_literal_percent() -> None:
    assert sql_problem("SELECT %(a)s || '%%' FROM t WHERE b = %(b)s") is None
    assert "binds ['A']" in str(sql_problem("SELECT %(A)s"))


def test_a_run_takes_the_defaults_and_what_it_is_given_instead() -> None:
    assert run_variables("w", {"a": 1, "b": "x"}, {"b": "y"}) == {"a": 1, "b": "y"}
    with pytest.raises(InvalidWorkflow, match=r"has no variable\(s\) \['c'\]; it declares: a"):
        run_variables("w", {"a": 1}, {"c": 2})


def test_sql_targets_are_a_json_object_of_names() -> None:
    assert parse_sql_targets('{"warehouse": "postgresql://w"}') == {"warehouse": "postgresql://w"}
    assert parse_sql_targets("") == {}
    with pytest.raises(ValueError, match="WORKFLOW_SQL_TARGETS must be a JSON object"):
        parse_sql_targets("warehouse")


def test_the_readme_s_and_the_demo_s_campaign_pass_the_checks() -> None:
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    found = re.search(r"## Workflows after ingestion\n.*?```yaml\n(?P<file>.*?)```", readme, re.S)
    assert found, "README.md has no workflow example under 'Workflows after ingestion'"
    demo = root / "local" / "demo_workflows.yaml"
    for text, origin in ((found["file"], "README.md"), (demo.read_text(), str(demo))):
        (entry,) = read_file(text, origin).workflows
        workflow = check_workflow(
            entry, sources={"demo-listings-a", "demo-partner"}, sql_targets={"warehouse"}
        )
        assert workflow.name == "campaign"


def test_a_definition_written_out_reads_back_the_same() -> None:
    demo = Path(__file__).resolve().parents[2] / "local" / "demo_workflows.yaml"
    (entry,) = read_file(demo.read_text(), "demo").workflows

    (again,) = read_file(dump_yaml({"workflows": [entry]}), "written").workflows

    assert again == entry
