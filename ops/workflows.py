"""Workflows for the operator: `sourceflow apply`'s `workflows:` (README, "Workflows after
ingestion"), and `sourceflow workflow list|run|runs|show`.

Apply makes the registered workflows match the file, as it does sources: a workflow it does not
know is added as version 1; one whose definition changed gets a new version (the old ones stay,
with the runs that name them); one the file drops is disabled, never deleted, and enabled again
when the file lists it again. Each new version is compiled (infra/workflow_machine.py) into a
state machine of its own, `sourceflow-<stage>-wf-<name>-v<N>`, created before its row is
written, so a version in the ledger always has its machine. The plan (`plan_workflows`) is pure;
the file is checked whole first, and refused whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from infra.resources import Names
from infra.workflow_machine import MachineWiring, compile_workflow
from ops.config import OperatorConfig, OperatorError
from ops.sources_file import InvalidSourcesFile
from shared.errors import SourceflowError
from shared.rules.workflows import (
    DEFINITION_CONTRACT,
    SQL_TARGETS_VARIABLE,
    Workflow,
    check_workflow,
    parse_sql_targets,
    run_variables,
    slot_taken_at,
)
from shared.runtime import contracts
from shared.runtime.aws import error_code
from shared.store import workflows as store
from shared.store.db import Database, session_login
from shared.store.sources import source_ids

TASKS_SERVICE = "tasks"
# Deploy = (workflow, version) -> the ARN a run of that version starts.
Deploy = Callable[[Workflow, int], str]


class Action(StrEnum):
    ADD = "add"
    NEW_VERSION = "new version"
    DISABLE = "disable"
    ENABLE = "enable"


@dataclass(frozen=True)
class Registered:
    name: str
    version: int
    enabled: bool
    definition_hash: str

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Registered:
        return cls(row["name"], row["current_version"], row["enabled"], row["definition_hash"])


@dataclass(frozen=True)
class Change:
    name: str
    action: Action
    version: int  # the version the workflow has after the change
    workflow: Workflow | None = None  # an added or changed one's


def plan_workflows(registered: Sequence[Registered], wanted: Sequence[Workflow]) -> list[Change]:
    """What makes the registered workflows match the wanted ones."""
    known = {workflow.name: workflow for workflow in registered}
    changes = []
    for workflow in wanted:
        current = known.get(workflow.name)
        if current is None:
            changes.append(Change(workflow.name, Action.ADD, 1, workflow))
        elif current.definition_hash != workflow.definition_hash:
            changes.append(Change(workflow.name, Action.NEW_VERSION, current.version + 1, workflow))
        elif not current.enabled:
            changes.append(Change(workflow.name, Action.ENABLE, current.version, workflow))
    listed = {workflow.name for workflow in wanted}
    changes += [
        Change(current.name, Action.DISABLE, current.version)
        for current in registered
        if current.name not in listed and current.enabled
    ]
    return changes


def sql_targets(config: OperatorConfig) -> frozenset[str]:
    """The names of the deployment's allow-listed SQL targets (WORKFLOW_SQL_TARGETS)."""
    try:
        return frozenset(parse_sql_targets(config.values.get(SQL_TARGETS_VARIABLE, "")))
    except ValueError as exc:
        raise OperatorError(f"{exc} (from {config.origin})") from None


def checked_workflows(
    entries: Any, origin: str, *, sources: Collection[str], targets: Collection[str]
) -> list[Workflow]:
    """Every item of `workflows:` checked; InvalidSourcesFile names every problem of every
    item, and every name listed twice."""
    if not isinstance(entries, list):
        raise InvalidSourcesFile(origin, ["workflows: is not a list (write `workflows: []`)"])
    wanted, problems = [], []
    for index, entry in enumerate(entries):
        try:
            wanted.append(check_workflow(entry, sources=sources, sql_targets=targets))
        except SourceflowError as exc:
            problems.append(f"workflows[{index}]: {exc}")
    names = [workflow.name for workflow in wanted]
    problems += [
        f"workflow {name!r}: listed more than once"
        for name in sorted({name for name in names if names.count(name) > 1})
    ]
    if problems:
        raise InvalidSourcesFile(origin, problems)
    return wanted


def file_workflows(
    entries: Any, origin: str, db: Database, config: OperatorConfig, *, listed: Collection[str]
) -> list[Workflow]:
    """A file's `workflows:` checked against the sources registered and those the same file
    `listed`, and the deployment's SQL targets."""
    with db.transaction() as cur:
        registered = source_ids(cur)
    return checked_workflows(
        entries, origin, sources=registered | set(listed), targets=sql_targets(config)
    )


def apply_workflows(
    db: Database, wanted: Sequence[Workflow], *, deploy: Deploy, dry_run: bool, now: datetime
) -> tuple[list[Change], str]:
    """Plan over the locked rows and, unless `dry_run`, deploy each new version's machine and
    record it, all rows in that one transaction (schedules counted from `now`). Returns the
    plan and the login that made it."""
    with db.transaction() as cur:
        plan = plan_workflows([Registered.of(row) for row in store.lock_workflows(cur)], wanted)
        if not dry_run:
            for change in plan:
                _make(cur, change, deploy, now)
        who = session_login(cur)
    return plan, who


def _make(cur: Any, change: Change, deploy: Deploy, now: datetime) -> None:
    workflow = change.workflow
    if change.action is Action.DISABLE:
        store.set_enabled(cur, change.name, False)
        return
    assert workflow is not None
    if change.action is Action.ENABLE:
        store.set_enabled(cur, change.name, True, slot_taken_at(workflow, now))
        return
    arn = deploy(workflow, change.version)
    store.add_version(
        cur, workflow.name, change.version, workflow.document, workflow.definition_hash, arn
    )
    store.make_current(
        cur,
        workflow.name,
        change.version,
        workflow.schedule_interval,
        workflow.schedule_cron,
        slot_taken_at(workflow, now),
    )


def export_workflows(db: Database) -> list[dict[str, Any]]:
    """The enabled workflows' current definitions, as a file's `workflows:` list that apply
    reads back as no change (a definition is kept as it was applied), each field in the
    contract's order (the database keeps jsonb keys in an order of its own)."""
    with db.transaction() as cur:
        rows = store.lock_workflows(cur)
    return [in_contract_order(row["definition"]) for row in rows if row["enabled"]]


def in_contract_order(definition: Mapping[str, Any]) -> dict[str, Any]:
    schema = contracts.schema_of(DEFINITION_CONTRACT)
    task_fields = list(schema["$defs"]["task"]["properties"])
    ordered = _ordered(definition, list(schema["properties"]))
    ordered["tasks"] = [_ordered(task, task_fields) for task in definition["tasks"]]
    return ordered


def _ordered(fields: Mapping[str, Any], order: Sequence[str]) -> dict[str, Any]:
    return {key: fields[key] for key in sorted(fields, key=order.index)}


# -- the machines ------------------------------------------------------------------------------


class Layout(StrEnum):
    """How a workflow's versions become state machines (WORKFLOW_MACHINES)."""

    # Each version a machine of its own: the local emulator runs nothing else.
    PER_VERSION = "per-version"
    # Each version a published version of the workflow's one machine, its alias ALIAS moved to
    # the newest: the cloud's way (the emulator publishes versions but cannot start one).
    VERSIONS = "versions"


MACHINES_VARIABLE = "WORKFLOW_MACHINES"
ALIAS = "current"


def layout(config: OperatorConfig) -> Layout:
    given = config.values.get(MACHINES_VARIABLE) or Layout.PER_VERSION
    try:
        return Layout(given)
    except ValueError:
        raise OperatorError(
            f"{MACHINES_VARIABLE}={given!r} (from {config.origin}): give "
            f"{Layout.PER_VERSION.value} or {Layout.VERSIONS.value}"
        ) from None


def machine_deployer(config: OperatorConfig) -> Deploy:
    """Deploy a version as its layout says, beside the run machine (whose role it takes: in
    the cloud, the role that may send to the services' queues, the tasks queue too)."""
    sfn, names, chosen = config.client("stepfunctions"), config.names, layout(config)
    run_machine = config.require("STATE_MACHINE_ARN")
    cache: dict[str, str] = {}

    def deploy(workflow: Workflow, version: int) -> str:
        if not cache:
            cache["queue"] = _tasks_queue_url(config, names)
            # (STATE_MACHINE_ARN may name the run machine's live alias: its role is the machine's)
            machine = _beside(run_machine, run_machine.split(":")[6])
            cache["role"] = sfn.describe_state_machine(stateMachineArn=machine)["roleArn"]
        wiring = MachineWiring(cache["queue"])
        definition = json.dumps(compile_workflow(workflow, version, wiring))
        if chosen is Layout.VERSIONS:
            return publish_version(
                sfn,
                names.workflow_state_machine(workflow.name),
                definition,
                role_arn=cache["role"],
                beside=run_machine,
                description=f"{workflow.name} v{version} ({workflow.definition_hash[:12]})",
            )
        name = names.workflow_state_machine(workflow.name, version)
        return deploy_machine(sfn, name, definition, role_arn=cache["role"], beside=run_machine)

    return deploy


def deploy_machine(sfn: Any, name: str, definition: str, *, role_arn: str, beside: str) -> str:
    """The state machine `name` with this definition: created, or, when an apply that failed
    before its commit left it (no version row names it yet), given this definition."""
    arn = _beside(beside, name)
    _create_or_update(sfn, name, arn, {"definition": definition, "roleArn": role_arn})
    return arn


def publish_version(
    sfn: Any, name: str, definition: str, *, role_arn: str, beside: str, description: str
) -> str:
    """Publish `definition` as a new version of the machine `name` (created the first time),
    point its alias ALIAS at it, and return the version's ARN: what the version's runs start."""
    arn = _beside(beside, name)
    answered = _create_or_update(
        sfn,
        name,
        arn,
        {
            "definition": definition,
            "roleArn": role_arn,
            "publish": True,
            "versionDescription": description,
        },
    )
    version_arn = str(answered["stateMachineVersionArn"])
    routing = [{"stateMachineVersionArn": version_arn, "weight": 100}]
    try:
        sfn.update_state_machine_alias(
            stateMachineAliasArn=f"{arn}:{ALIAS}", routingConfiguration=routing
        )
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFound":
            raise
        sfn.create_state_machine_alias(name=ALIAS, routingConfiguration=routing)
    return version_arn


def _create_or_update(sfn: Any, name: str, arn: str, settings: Mapping[str, Any]) -> Any:
    """Update the machine, or create it when there is none. (Updating first: the emulator
    answers a create of an existing name with the old machine, where AWS refuses it.)"""
    try:
        return sfn.update_state_machine(stateMachineArn=arn, **settings)
    except ClientError as exc:
        if error_code(exc) != "StateMachineDoesNotExist":
            raise
    return sfn.create_state_machine(name=name, **settings)


def _beside(machine_arn: str, name: str) -> str:
    """The ARN of machine `name` in the account and region of `machine_arn`."""
    return ":".join([*machine_arn.split(":")[:6], name])


def _tasks_queue_url(config: OperatorConfig, names: Names) -> str:
    queue = names.queue(TASKS_SERVICE)
    try:
        return str(config.client("sqs").get_queue_url(QueueName=queue)["QueueUrl"])
    except ClientError as exc:
        raise OperatorError(
            f"the tasks service's queue {queue} is not there ({exc}); deploy the tasks service "
            "(or start the local stack) before applying workflows"
        ) from None


# -- what apply says ---------------------------------------------------------------------------


def changes_as_json(plan: Sequence[Change]) -> list[dict[str, Any]]:
    return [
        {"workflow": change.name, "action": change.action.value, "version": change.version}
        for change in plan
    ]


_MARKS = {Action.ADD: "+", Action.NEW_VERSION: "~", Action.DISABLE: "-", Action.ENABLE: "+"}


def changes_said(plan: Sequence[Change], *, origin: str, dry_run: bool, who: str) -> str:
    if not plan:
        return f"no changes: the registered workflows match {origin}"
    lines = [f"workflows in {origin}: {len(plan)} change(s)"]
    for change in plan:
        lines.append(
            f"  {_MARKS[change.action]} {change.action.value} {change.name} "
            f"(version {change.version})"
        )
    lines.append(
        "dry run: nothing changed" if dry_run else f"applied as {who}: {len(plan)} change(s)"
    )
    return "\n".join(lines)


# -- runs --------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"^([a-z][a-z0-9_]{0,63})=(.*)$", re.DOTALL)


def given_variables(pairs: Sequence[str]) -> dict[str, Any]:
    """`--var k=v` values: JSON where the value reads as a JSON number, true, false or null
    (`--var limit=5`), the text as given otherwise (`--var region=eu`)."""
    given: dict[str, Any] = {}
    for pair in pairs:
        match = _VARIABLE.match(pair)
        if match is None:
            raise OperatorError(
                f"--var {pair!r}: write NAME=VALUE, NAME a variable's name (a-z, 0-9, _)"
            )
        name, text = match.groups()
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        given[name] = value if value is None or isinstance(value, (int, float, bool)) else text
    return given


def run_workflow(
    db: Database, sfn: Any, name: str, given: Mapping[str, Any], *, nonce: str
) -> dict[str, Any]:
    """Start a run of the workflow's current version; returns what was started."""
    with db.transaction() as cur:
        workflow = store.current(cur, name)
        if workflow is None:
            raise OperatorError(
                f"no workflow {name!r}; `sourceflow workflow list` shows them, `sourceflow "
                "apply FILE` adds one"
            )
        if not workflow["enabled"]:
            raise OperatorError(
                f"workflow {name!r} is disabled (the applied file no longer lists it); list "
                "it again and `sourceflow apply` the file"
            )
        variables = run_variables(name, workflow["definition"].get("variables", {}), given)
        run_id = store.start_run(
            cur, sfn, workflow, variables, started=datetime.now(UTC), nonce=nonce
        )
    return {"run": run_id, "workflow": name, "version": workflow["version"], "variables": variables}


def show_run(db: Database, run_id: str) -> dict[str, Any]:
    """A workflow run whole: its row, every task of its version with what the tasks service
    recorded of it (a task not yet reached: no status), and the version's definition."""
    with db.transaction() as cur:
        found = store.run(cur, run_id)
        if found is None:
            raise OperatorError(
                f"no workflow run {run_id!r}; `sourceflow workflow runs` lists them"
            )
        recorded = {row["task"]: row for row in store.task_runs(cur, run_id)}
    definition = found.pop("definition")
    tasks = []
    for task in definition["tasks"]:
        row = recorded.get(task["name"], {})
        tasks.append(
            {
                "task": task["name"],
                "kind": task["kind"],
                "status": row.get("status"),
                "variables_seen": row.get("variables_seen"),
                "output": row.get("output"),
                "error": row.get("error"),
                "child_run_id": row.get("child_run_id"),
                "started_at": row.get("started_at"),
                "ended_at": row.get("ended_at"),
            }
        )
    return {"run": found, "tasks": tasks, "definition": definition}
