"""Workflows in the ledger (migration 0021) through the operator's and the scheduler's code:
apply registers versions (each deployed before its row), a run records the version it ran and
who asked, the scheduler starts a due workflow once per slot, and `workflow show` joins what the
tasks service recorded. Step Functions is a recording stand-in here; the compiled machines run
on the moto server in test_workflow_machine.py."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local.roles import create_roles
from ops.config import OperatorError
from ops.workflows import Action, apply_workflows, run_workflow, show_run
from services.scheduler.service import start_due_workflows
from shared.rules.workflows import InvalidWorkflow, Workflow, check_workflow
from shared.store import workflows as store
from shared.store.db import Database
from tests.integration.conftest import RESPECS_TABLES

ALICE = "it_alice"
NOW = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)


class RecordingSfn:
    """Step Functions as far as starting runs goes: what was started, by name; a name
    started twice answers ExecutionAlreadyExists, as Step Functions does."""

    def __init__(self) -> None:
        self.started: dict[str, dict[str, Any]] = {}

    def start_execution(self, *, stateMachineArn: str, name: str, input: str) -> dict[str, str]:
        if name in self.started:
            raise ClientError(
                {"Error": {"Code": "ExecutionAlreadyExists", "Message": name}}, "StartExecution"
            )
        self.started[name] = {"machine": stateMachineArn, "input": json.loads(input)}
        return {"executionArn": f"{stateMachineArn}:{name}"}


def a_definition(name: str, **fields: Any) -> Workflow:
    entry = {
        "name": name,
        "variables": {"region": "eu"},
        "tasks": [{"name": "say", "kind": "notify", "subject": "hi", "message": "{region}"}],
        **fields,
    }
    return check_workflow(entry, sources=(), sql_targets=())


def deployed(into: list[tuple[str, int]]) -> Any:
    def deploy(workflow: Workflow, version: int) -> str:
        into.append((workflow.name, version))
        return (
            f"arn:aws:states:us-east-1:123456789012:stateMachine:it-wf-{workflow.name}-v{version}"
        )

    return deploy


@pytest.fixture
def name() -> str:
    return f"wf_{uuid.uuid4().hex[:12]}"


def test_apply_adds_a_version_changes_make_new_ones_and_a_dropped_workflow_is_disabled(
    people: Mapping[str, Database], name: str
) -> None:
    alice, deploys = people[ALICE], list[tuple[str, int]]()
    first = a_definition(name)

    plan, who = apply_workflows(alice, [first], deploy=deployed(deploys), dry_run=False, now=NOW)
    assert [(c.action, c.version) for c in plan if c.name == name] == [(Action.ADD, 1)]
    assert who == ALICE
    again, _ = apply_workflows(alice, [first], deploy=deployed(deploys), dry_run=False, now=NOW)
    assert [c for c in again if c.name == name] == []

    changed = a_definition(name, schedule_interval="1h")
    plan, _ = apply_workflows(alice, [changed], deploy=deployed(deploys), dry_run=False, now=NOW)
    assert [(c.action, c.version) for c in plan if c.name == name] == [(Action.NEW_VERSION, 2)]
    assert deploys == [(name, 1), (name, 2)]

    plan, _ = apply_workflows(alice, [], deploy=deployed(deploys), dry_run=False, now=NOW)
    assert (name, Action.DISABLE) in [(c.name, c.action) for c in plan]
    plan, _ = apply_workflows(alice, [changed], deploy=deployed(deploys), dry_run=False, now=NOW)
    assert [(c.action, c.version) for c in plan if c.name == name] == [(Action.ENABLE, 2)]

    with alice.transaction() as cur:
        cur.execute(
            "SELECT version, created_by, definition->'schedule_interval' AS every"
            " FROM public.workflow_version WHERE workflow = %s ORDER BY version",
            (name,),
        )
        versions = cur.fetchall()
        current = store.current(cur, name)
    assert [(v["version"], v["created_by"], v["every"]) for v in versions] == [
        (1, ALICE, None),
        (2, ALICE, "1h"),
    ]
    assert current is not None and current["version"] == 2 and current["enabled"]


def test_a_dry_run_deploys_and_records_nothing(people: Mapping[str, Database], name: str) -> None:
    deploys: list[tuple[str, int]] = []

    plan, _ = apply_workflows(
        people[ALICE], [a_definition(name)], deploy=deployed(deploys), dry_run=True, now=NOW
    )

    assert [c.action for c in plan if c.name == name] == [Action.ADD]
    assert deploys == []
    with people[ALICE].transaction() as cur:
        assert store.current(cur, name) is None


def test_a_run_records_its_version_its_variables_and_who_asked(
    people: Mapping[str, Database], name: str
) -> None:
    alice, sfn = people[ALICE], RecordingSfn()
    apply_workflows(alice, [a_definition(name)], deploy=deployed([]), dry_run=False, now=NOW)

    started = run_workflow(alice, sfn, name, {"region": "us"}, nonce="it")

    (execution,) = sfn.started.values()
    assert execution["machine"].endswith(f"it-wf-{name}-v1")
    assert execution["input"] == {"variables": {"region": "us"}}
    shown = show_run(alice, started["run"])
    assert shown["run"]["version"] == 1
    assert shown["run"]["variables"] == {"region": "us"}
    assert shown["run"]["requested_by"] == ALICE
    assert shown["run"]["status"] == "running"
    assert [(task["task"], task["status"]) for task in shown["tasks"]] == [("say", None)]


def test_a_run_refuses_an_unknown_workflow_or_variable(
    people: Mapping[str, Database], name: str
) -> None:
    alice = people[ALICE]
    with pytest.raises(OperatorError, match=f"no workflow {name!r}; `sourceflow workflow list`"):
        run_workflow(alice, RecordingSfn(), name, {}, nonce="it")
    apply_workflows(alice, [a_definition(name)], deploy=deployed([]), dry_run=False, now=NOW)
    with pytest.raises(InvalidWorkflow, match=r"no variable\(s\) \['nope'\]; it declares: region"):
        run_workflow(alice, RecordingSfn(), name, {"nope": 1}, nonce="it")


def test_show_joins_what_the_tasks_service_recorded(
    people: Mapping[str, Database], db: Database, name: str
) -> None:
    alice = people[ALICE]
    apply_workflows(alice, [a_definition(name)], deploy=deployed([]), dry_run=False, now=NOW)
    run_id = run_workflow(alice, RecordingSfn(), name, {}, nonce="it")["run"]
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO public.workflow_task_run (workflow_run_id, task, kind, status,"
            " variables_seen, output, ended_at) VALUES (%s, 'say', 'notify', 'succeeded',"
            " '{\"region\": \"eu\"}', '{}', now())",
            (run_id,),
        )

    (task,) = show_run(alice, run_id)["tasks"]

    assert task["status"] == "succeeded"
    assert task["variables_seen"] == {"region": "eu"}


@pytest.fixture(scope="module")
def scheduler(migrated_url: str) -> Any:
    database = Database(create_roles(migrated_url, RESPECS_TABLES)["scheduler"])
    yield database
    database.close()


def test_the_scheduler_starts_a_due_workflow_once_per_slot_as_itself(
    people: Mapping[str, Database], scheduler: Database, name: str
) -> None:
    alice, sfn = people[ALICE], RecordingSfn()
    hourly = a_definition(name, schedule_interval="1h")
    # Applied at 12:30: the 12:00 slot is past, its first run is at 13:00
    apply_workflows(alice, [hourly], deploy=deployed([]), dry_run=False, now=NOW)

    def started_at(moment: datetime) -> list[str]:
        return [run for run in start_due_workflows(moment, db=scheduler, sfn=sfn) if name in run]

    assert started_at(NOW) == []
    first = started_at(NOW + timedelta(hours=1))
    again = started_at(NOW + timedelta(hours=1))

    assert first == [f"{name}-v1-20261128T130000Z-sched"]
    assert again == []
    shown = show_run(alice, first[0])["run"]
    assert shown["requested_by"] == "sourceflow_scheduler"
    assert shown["variables"] == {"region": "eu"}
    # Disabled, it is not started; enabled again at 16:10, the slots it missed are not made up
    apply_workflows(alice, [], deploy=deployed([]), dry_run=False, now=NOW)
    assert started_at(NOW + timedelta(hours=2)) == []
    enabled_at = NOW + timedelta(hours=3, minutes=40)
    apply_workflows(alice, [hourly], deploy=deployed([]), dry_run=False, now=enabled_at)
    assert started_at(enabled_at) == []
    assert started_at(enabled_at + timedelta(hours=1)) == [f"{name}-v1-20261128T170000Z-sched"]


def test_an_apply_waits_for_another_to_end_before_it_plans(
    people: Mapping[str, Database], name: str
) -> None:
    plans: list[Any] = []

    def bob_applies() -> None:
        plans.extend(
            apply_workflows(
                people["it_bob"], [a_definition(name)], deploy=deployed([]), dry_run=False, now=NOW
            )[0]
        )

    # While alice's apply holds its transaction open
    with people[ALICE].transaction() as cur:
        store.lock_workflows(cur)
        bob = threading.Thread(target=bob_applies)
        bob.start()
        bob.join(timeout=1)
        # Then bob's waits (two applies adding one workflow would both insert its version 1)
        assert bob.is_alive() and plans == []
    bob.join(timeout=60)
    assert [(c.name, c.action) for c in plans if c.name == name] == [(name, Action.ADD)]
