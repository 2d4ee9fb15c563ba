"""Compiled workflow machines run on the moto server (the embedded stack's Step Functions),
with a scripted stand-in for the tasks service answering each callback: the machine alone
decides which tasks run, in which order and at once, and what each one sees.

(The tasks service itself, answering the same messages, is tests/e2e's; here each task's end is
the test's choice, so every edge and constraint is driven both ways.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from infra.workflow_machine import FINISH_KIND, MachineWiring, compile_workflow
from local.demo import CAMPAIGN_RAN
from ops.sources_file import read_file
from ops.workflows import ALIAS, publish_version
from shared.rules.workflows import WORKFLOW_TASK_ERROR, Workflow, check_workflow, run_variables

CAMPAIGN_FILE = Path(__file__).resolve().parents[2] / "local" / "demo_workflows.yaml"
SOURCES = {"demo-listings-a", "demo-partner"}
TARGETS = {"warehouse"}
WAIT_SECONDS = 120


@pytest.fixture(scope="module")
def aws() -> Iterator[Mapping[str, Any]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "MOTO_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                if requests.get(f"{endpoint}/moto-api/", timeout=1).ok:
                    break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        requests.post(
            f"{endpoint}/moto-api/config",
            json={"stepfunctions": {"execute_state_machine": True}},
            timeout=5,
        ).raise_for_status()
        options = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        yield {
            "sqs": boto3.client("sqs", **options),
            "sfn": boto3.client("stepfunctions", **options),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


@dataclass
class Played:
    """What the stand-in saw: each task's request in the order they came, and the finish."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    finish: dict[str, Any] | None = None
    status: str = ""

    @property
    def ran(self) -> list[str]:
        return [request["task"] for request in self.requests]

    def seen(self, task: str) -> dict[str, Any]:
        return next(request for request in self.requests if request["task"] == task)


def play(
    aws: Mapping[str, Any],
    workflow: Workflow,
    *,
    failing: set[str] = frozenset(),  # type: ignore[assignment]
    answers: Mapping[str, Mapping[str, Any]] | None = None,
    given: Mapping[str, Any] | None = None,
) -> Played:
    """Run `workflow` once: each task answered with success (its `answers` variables, or the
    outputs it declares with made-up values) unless it is `failing`; the finish answered."""
    sqs, sfn = aws["sqs"], aws["sfn"]
    name = f"{workflow.name}-{time.monotonic_ns()}"
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    definition = compile_workflow(workflow, 1, MachineWiring(queue))
    machine = sfn.create_state_machine(
        name=name,
        definition=json.dumps(definition),
        roleArn="arn:aws:iam::123456789012:role/sourceflow-local-state-machine",
    )["stateMachineArn"]
    execution = sfn.start_execution(
        stateMachineArn=machine,
        name=name,
        input=json.dumps(
            {"variables": run_variables(workflow.name, workflow.variables, given or {})}
        ),
    )["executionArn"]
    played = Played()
    deadline = time.monotonic() + WAIT_SECONDS
    while played.finish is None:
        assert time.monotonic() < deadline, f"{name}: no finish; tasks so far {played.ran}"
        for message in sqs.receive_message(
            QueueUrl=queue, WaitTimeSeconds=1, MaxNumberOfMessages=10
        ).get("Messages", []):
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            request = json.loads(message["Body"])
            token = request["task_token"]
            if request["kind"] == FINISH_KIND:
                played.finish = request
                sfn.send_task_success(taskToken=token, output="{}")
                continue
            played.requests.append(request)
            task = workflow.task(request["task"])
            if task.name in failing:
                sfn.send_task_failure(taskToken=token, error=WORKFLOW_TASK_ERROR, cause="scripted")
                continue
            variables = (answers or {}).get(task.name)
            if variables is None:
                variables = {output: f"{output}-value" for output in task.outputs}
            result = {"status": "succeeded", "variables": variables, "detail": {}}
            sfn.send_task_success(taskToken=token, output=json.dumps(result))
    while True:
        played.status = sfn.describe_execution(executionArn=execution)["status"]
        if played.status != "RUNNING":
            return played
        assert time.monotonic() < deadline, f"{name}: still running after its finish"
        time.sleep(0.1)


def campaign() -> Workflow:
    (entry,) = read_file(CAMPAIGN_FILE.read_text(), str(CAMPAIGN_FILE)).workflows
    return check_workflow(entry, sources=SOURCES, sql_targets=TARGETS)


ACTIVE = {"check_campaign": {"campaign_id": "spring-sale"}}


def test_an_active_campaign_ingests_both_sources_at_once_then_the_sql_tasks_in_order(
    aws: Mapping[str, Any],
) -> None:
    played = play(aws, campaign(), answers=ACTIVE)

    assert played.ran[0] == "check_campaign"
    assert set(played.ran[1:3]) == {"ingest_listings", "ingest_partner"}
    assert played.ran[3:] == ["publish_campaign", "warm_caches", "announce", "aggregate_metrics"]
    assert played.finish is not None
    assert played.finish["statuses"] == CAMPAIGN_RAN  # as the demo checks it
    # Each task sees the variables set before it, both ingests' included after the join.
    seen = played.seen("publish_campaign")["variables"]
    assert seen["campaign_id"] == "spring-sale"
    assert seen["ingest_listings_records"] == "ingest_listings_records-value"
    assert seen["ingest_partner_records"] == "ingest_partner_records-value"
    assert seen["channel"] == "#campaigns"
    assert played.seen("publish_campaign")["spec"]["target"] == "warehouse"
    assert played.finish["variables"]["campaign_status"] == "campaign_status-value"
    assert played.status == "SUCCEEDED"


def test_a_failing_ingest_skips_what_needs_it_runs_the_recovery_task_and_fails_the_run(
    aws: Mapping[str, Any],
) -> None:
    played = play(aws, campaign(), answers=ACTIVE, failing={"ingest_partner"})

    assert played.finish is not None
    statuses = played.finish["statuses"]
    assert statuses["ingest_partner"] == "failed"
    assert statuses["ingest_listings"] == "succeeded"
    # AND: publish needs both ingests; the tasks after it go with it.
    assert statuses["publish_campaign"] == statuses["warm_caches"] == "skipped"
    assert statuses["announce"] == "skipped"
    # OR: one failure among its edges is enough.
    assert statuses["mark_failed"] == "succeeded"
    assert statuses["aggregate_metrics"] == "succeeded"
    assert played.status == "FAILED"


def test_no_active_campaign_runs_nothing_but_the_check(aws: Mapping[str, Any]) -> None:
    played = play(aws, campaign(), answers={"check_campaign": {"campaign_id": None}})

    assert played.ran == ["check_campaign"]
    assert played.finish is not None
    assert set(played.finish["statuses"].values()) == {"succeeded", "skipped"}
    assert played.status == "SUCCEEDED"


def test_a_variable_given_to_the_run_reaches_the_tasks(aws: Mapping[str, Any]) -> None:
    played = play(aws, campaign(), answers=ACTIVE, given={"channel": "#launch"})

    assert played.seen("announce")["variables"]["channel"] == "#launch"


def test_in_the_cloud_layout_each_version_is_published_and_the_alias_follows_the_newest(
    aws: Mapping[str, Any],
) -> None:
    """The emulator publishes versions and moves aliases (it cannot start a version: locally,
    each version is a machine of its own)."""
    sfn, name = aws["sfn"], f"wf-published-{time.monotonic_ns()}"
    role = "arn:aws:iam::123456789012:role/sourceflow-local-state-machine"
    beside = "arn:aws:states:us-east-1:123456789012:stateMachine:sourceflow-local-run"
    first, second = (
        json.dumps(compile_workflow(campaign(), version, MachineWiring("https://q")))
        for version in (1, 2)
    )

    one = publish_version(sfn, name, first, role_arn=role, beside=beside, description="v1")
    two = publish_version(sfn, name, second, role_arn=role, beside=beside, description="v2")

    assert one.endswith(f":stateMachine:{name}:1")
    assert two.endswith(f":stateMachine:{name}:2")
    alias = sfn.describe_state_machine_alias(
        stateMachineAliasArn=f"{beside.rsplit(':', 1)[0]}:{name}:{ALIAS}"
    )
    assert alias["routingConfiguration"] == [{"stateMachineVersionArn": two, "weight": 100}]
    assert json.loads(sfn.describe_state_machine(stateMachineArn=one)["definition"]) == json.loads(
        first
    )
