"""The interface between the compiler and the tasks service, checked both ways: every message
a compiled workflow machine sends (the campaign's: every kind, and finish) is a valid
workflow-task-request.v1 once Step Functions fills its paths, and the tasks service's result is
a valid workflow-task-result.v1 (what `Merge <task>` merges is its `variables`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from infra.workflow_machine import MachineWiring, compile_workflow
from ops.sources_file import read_file
from shared.rules.workflows import check_workflow
from shared.runtime import contracts

CAMPAIGN_FILE = Path(__file__).resolve().parents[2] / "local" / "demo_workflows.yaml"
# What Step Functions puts in place of each path the machine names.
FILLED = {
    "$$.Execution.Name": "campaign-v1-20261128T060000Z-1a2b3c4d",
    "$$.Execution.Id": "arn:aws:states:eu-west-1:123456789012:execution:"
    "sourceflow-prod-wf-campaign-v1:campaign-v1-20261128T060000Z-1a2b3c4d",
    "$$.State.EnteredTime": "2026-11-28T06:00:01.250Z",
    "$$.Task.Token": "AQCEAAAAKgAAAAMAAAAAAAAAAdGVzdC10b2tlbg==",
    "$.variables": {"channel": "#campaigns", "campaign_id": 7},
    "$.statuses": {"check_campaign": "succeeded", "ingest_listings": "failed"},
}


def campaign_machine() -> dict[str, Any]:
    [entry] = read_file(CAMPAIGN_FILE.read_text(), str(CAMPAIGN_FILE)).workflows or []
    workflow = check_workflow(
        entry, sources={"demo-listings-a", "demo-partner"}, sql_targets={"warehouse"}
    )
    return compile_workflow(workflow, 1, MachineWiring("https://sqs.example/tasks"))


def callback_bodies(states: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        if state["Type"] == "Parallel":
            for branch in state["Branches"]:
                yield from callback_bodies(branch["States"])
        elif state["Type"] == "Task" and "waitForTaskToken" in state["Resource"]:
            yield name, state["Parameters"]["MessageBody"]


def filled(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key.removesuffix(".$"): FILLED[value] if key.endswith(".$") else value
        for key, value in body.items()
    }


BODIES = list(callback_bodies(campaign_machine()["States"]))


def test_the_campaign_sends_every_kind_and_its_finish() -> None:
    assert {body["kind"] for _, body in BODIES} == {"sql", "ingest", "notify", "finish"}


@pytest.mark.parametrize(("state", "body"), BODIES, ids=[name for name, _ in BODIES])
def test_each_message_of_the_compiled_machine_is_a_valid_task_request(
    state: str, body: dict[str, Any]
) -> None:
    contracts.validate(filled(body), "workflow-task-request")


def test_the_machine_merges_the_variables_every_task_result_carries() -> None:
    # The result contract requires `variables` (what the service sends on success) ...
    schema = contracts.schema_of("workflow-task-result")
    assert "variables" in schema["required"]
    # ... and every task's success lands in $.result, whose variables its Merge state joins in.
    states = dict(flattened(campaign_machine()["States"]))
    for name, body in BODIES:
        if body["kind"] == "finish":
            continue
        assert states[name]["ResultPath"] == "$.result"
        merge = states[f"Merge {name}"]["Parameters"]["variables.$"]
        assert merge == "States.JsonMerge($.variables, $.result.variables, false)"


def flattened(states: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        yield name, state
        for branch in state.get("Branches", []):
            yield from flattened(branch["States"])
