"""Workflows after ingestion (issue 21): the names both the compiler and the tasks service use.

The interface part below is shared with services/tasks; the rules of definitions follow it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import pglast

from shared.errors import PermanentError
from shared.rules.schedules import InvalidSchedule, Schedule, source_schedule
from shared.rules.source_settings import parse_duration
from shared.runtime import contracts
from shared.runtime.executions import execution_name


class TaskKind(StrEnum):
    INGEST = "ingest"
    SQL = "sql"
    NOTIFY = "notify"


class TaskStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class EdgeOn(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    COMPLETION = "completion"


class When(StrEnum):
    ALL = "all"
    ANY = "any"


class WorkflowRunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# The error name of SendTaskFailure for a failed task.
WORKFLOW_TASK_ERROR = "WorkflowTaskFailed"


# -- definitions: what a workflow is, checked (pure) -------------------------------------------

DEFINITION_CONTRACT = "workflow-definition"
# The deployment's allow-listed SQL targets: a JSON object of each target's name to its
# database (a DSN, or a database secret's ARN). The tasks service connects to them; the
# operator's `apply` checks that a sql task names one of them.
SQL_TARGETS_VARIABLE = "WORKFLOW_SQL_TARGETS"
INGEST_FLOWS = ("normal", "respecs", "backdated", "sold")
DEFAULT_INGEST_FLOW = "normal"
# What an ingest task's success sets, each prefixed with `<task>_`: its child run's result.
INGEST_OUTPUTS = ("records", "window_start", "window_end", "cursor")
# %(name)s binds a variable (psycopg2's pyformat); %% is a literal %.
_SQL_PARAMETER = re.compile(r"%\((?P<name>[^)]*)\)s|%%")
_PLACEHOLDER = re.compile(r"\{(?P<name>[^{}]*)\}")
_EDGE_FIELDS = ("after", "when", "if_set")
_TASK_FIELDS = ("name", "kind", *_EDGE_FIELDS)


class InvalidWorkflow(PermanentError):
    """A workflow definition that cannot be applied; the message names the workflow, the task
    and the fix."""

    error_name = "InvalidWorkflow"


@dataclass(frozen=True)
class Edge:
    task: str
    on: EdgeOn = EdgeOn.SUCCESS


@dataclass(frozen=True)
class Task:
    name: str
    kind: TaskKind
    # What the tasks service is sent as `spec`: the task's own fields, defaults filled in.
    spec: Mapping[str, Any]
    after: tuple[Edge, ...] = ()
    when: When = When.ALL
    if_set: tuple[str, ...] = ()

    @property
    def outputs(self) -> tuple[str, ...]:
        """The variables this task's success sets (workflow-task-result.v1)."""
        if self.kind is TaskKind.INGEST:
            return tuple(f"{self.name}_{output}" for output in INGEST_OUTPUTS)
        if self.kind is TaskKind.SQL and self.spec["into"] is not None:
            return (self.spec["into"],)
        return ()


@dataclass(frozen=True)
class Workflow:
    name: str
    tasks: tuple[Task, ...]
    variables: Mapping[str, Any] = field(default_factory=dict)
    schedule_interval: timedelta | None = None
    schedule_cron: str | None = None
    # The definition as written (checked), for the ledger and `workflow export`.
    document: Mapping[str, Any] = field(default_factory=dict)

    def task(self, name: str) -> Task:
        return next(task for task in self.tasks if task.name == name)

    @property
    def definition_hash(self) -> str:
        """What identifies this version's definition: a change makes a new version."""
        canonical = json.dumps(self.document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def check_workflow(
    entry: Any, *, sources: Collection[str], sql_targets: Collection[str]
) -> Workflow:
    """A workflow from a sources file's `workflows:` item, checked whole: its shape against the
    contract, then what a schema cannot say. InvalidWorkflow names every problem."""
    if not isinstance(entry, Mapping):
        raise InvalidWorkflow("a workflow is a mapping of name, tasks, variables, …")
    where = f"workflow {entry['name']!r}: " if isinstance(entry.get("name"), str) else ""
    problems = [
        problem.removeprefix("$: ").removeprefix("$.")
        for problem in contracts.violations(entry, DEFINITION_CONTRACT)
    ]
    if problems:
        raise InvalidWorkflow(
            where + "; ".join(problems) + f" (see contracts/{DEFINITION_CONTRACT}.v1.schema.json)"
        )
    tasks = tuple(_task_of(item) for item in entry["tasks"])
    workflow = Workflow(
        name=entry["name"],
        tasks=tasks,
        variables=dict(entry.get("variables", {})),
        schedule_cron=entry.get("schedule_cron"),
        document=dict(entry),
    )
    problems = _structure_problems(workflow)
    if not problems:  # the rest needs the edges sound
        problems = [
            *_never_run(workflow),
            *_unknown_variables(workflow),
            *_references(workflow, sources, sql_targets),
        ]
    try:
        interval = entry.get("schedule_interval")
        workflow = replace(
            workflow, schedule_interval=None if interval is None else parse_duration(interval)
        )
        workflow_schedule(workflow)
    except (ValueError, InvalidSchedule) as exc:
        problems.append(f"schedule: {exc}")
    if problems:
        raise InvalidWorkflow(where + "; ".join(problems))
    return workflow


def workflow_schedule(workflow: Workflow) -> Schedule | None:
    """The workflow's schedule, read as the scheduler reads a source's."""
    return source_schedule(
        workflow.name, workflow.schedule_interval, workflow.schedule_cron, kind="workflow"
    )


def slot_taken_at(workflow: Workflow, now: datetime) -> datetime | None:
    """The slot a workflow applied or enabled at `now` counts as already started: the one at
    or before now. A schedule starts from when it is applied — a daily 06:00 workflow applied
    at 15:00 first runs tomorrow at 06:00, not at once for a slot long past."""
    schedule = workflow_schedule(workflow)
    return None if schedule is None else schedule.previous_slot(now)


def _task_of(item: Mapping[str, Any]) -> Task:
    kind = TaskKind(item["kind"])
    spec = {key: value for key, value in item.items() if key not in _TASK_FIELDS}
    if kind is TaskKind.INGEST:
        spec.setdefault("flow", DEFAULT_INGEST_FLOW)
    elif kind is TaskKind.SQL:
        spec.setdefault("into", None)
    after = tuple(
        Edge(edge) if isinstance(edge, str) else Edge(edge["task"], EdgeOn(edge["on"]))
        for edge in item.get("after", ())
    )
    return Task(
        item["name"],
        kind,
        spec,
        after,
        When(item.get("when", When.ALL)),
        tuple(item.get("if_set", ())),
    )


def _structure_problems(workflow: Workflow) -> list[str]:
    """Task names listed twice, edges to unknown tasks or to the task itself, edges named
    twice, and cycles."""
    problems = []
    names = [task.name for task in workflow.tasks]
    for name in sorted({name for name in names if names.count(name) > 1}):
        problems.append(f"task {name!r} is listed more than once; give each task its own name")
    for task in workflow.tasks:
        seen = set()
        for edge in task.after:
            if edge.task not in names:
                problems.append(
                    f"task {task.name!r}: after {edge.task!r}, which is no task of this "
                    f"workflow; name one of {sorted(set(names))}"
                )
            elif edge.task == task.name:
                problems.append(f"task {task.name!r}: runs after itself; drop that edge")
            if edge.task in seen:
                problems.append(
                    f"task {task.name!r}: names {edge.task!r} twice in after; use "
                    "`on: completion` for success or failure"
                )
            seen.add(edge.task)
    if problems:
        return problems
    cycle = find_cycle(workflow)
    if cycle:
        return [
            f"tasks {' -> '.join(cycle)} run after each other in a cycle, so none of them "
            "could start; drop one of those edges"
        ]
    return []


def find_cycle(workflow: Workflow) -> list[str]:
    """A cycle of `after` edges, as the tasks along it (the first repeated at the end), or []."""
    successors: dict[str, list[str]] = {task.name: [] for task in workflow.tasks}
    for task in workflow.tasks:
        for edge in task.after:
            successors[edge.task].append(task.name)
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    path: list[str] = []

    def walk(name: str) -> list[str]:
        state[name] = 1
        path.append(name)
        for successor in successors[name]:
            if state.get(successor) == 1:
                return [*path[path.index(successor) :], successor]
            if successor not in state:
                found = walk(successor)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return []

    for task in workflow.tasks:
        if task.name not in state:
            found = walk(task.name)
            if found:
                return found
    return []


def topological_order(workflow: Workflow) -> list[Task]:
    """The tasks, each after all of its predecessors, in the order written where free."""
    placed: set[str] = set()
    order: list[Task] = []
    while len(order) < len(workflow.tasks):
        for task in workflow.tasks:
            if task.name not in placed and all(edge.task in placed for edge in task.after):
                placed.add(task.name)
                order.append(task)
                break
    return order


def levels(workflow: Workflow) -> list[list[Task]]:
    """The tasks by level: a task's level is one more than its predecessors' highest (0 without
    any). No path joins two tasks of a level, so they may run at once."""
    level: dict[str, int] = {}
    for task in topological_order(workflow):
        level[task.name] = 1 + max((level[edge.task] for edge in task.after), default=-1)
    grouped: list[list[Task]] = [[] for _ in range(max(level.values()) + 1)]
    for task in workflow.tasks:
        grouped[level[task.name]].append(task)
    return grouped


# The ends a task may come to, and which of them make an edge hold.
_HOLDS = {
    EdgeOn.SUCCESS: {TaskStatus.SUCCEEDED},
    EdgeOn.FAILURE: {TaskStatus.FAILED},
    EdgeOn.COMPLETION: {TaskStatus.SUCCEEDED, TaskStatus.FAILED},
}


def edge_holds(on: EdgeOn, status: TaskStatus) -> bool:
    """An edge `on: success` holds iff its task SUCCEEDED, `failure` iff it FAILED,
    `completion` iff either; a SKIPPED task's edges hold for nothing."""
    return status in _HOLDS[on]


# How many ends of a task's ancestors `_never_run` tries before it gives the task the benefit of
# the doubt (a workflow's tasks rarely have more than a dozen ancestors: 2^12 ends).
NEVER_RUN_BUDGET = 4096


def edges_hold(task: Task, statuses: Mapping[str, TaskStatus]) -> bool:
    """Whether the task's edges hold (all of them, or any), given its predecessors' ends; a
    task without predecessors always runs."""
    held = [edge_holds(edge.on, statuses[edge.task]) for edge in task.after]
    return not held or (all(held) if task.when is When.ALL else any(held))


def _never_run(workflow: Workflow) -> list[str]:
    """The tasks whose edges hold for no way their ancestors can end (e.g. after b and c with
    `when: all`, b running only on a's success and c only on its failure), tried over every
    way up to NEVER_RUN_BUDGET; past it, the task is given the benefit of the doubt."""
    order = topological_order(workflow)
    ancestors: dict[str, set[str]] = {}
    for task in order:
        ancestors[task.name] = set().union(
            *({edge.task} | ancestors[edge.task] for edge in task.after)
        )
    problems = []
    for task in order:
        line = [t for t in order if t.name in ancestors[task.name]]
        if task.after and not _can_hold(task, line, {}, [NEVER_RUN_BUDGET]):
            problems.append(
                f"task {task.name!r} can never run: its edges hold for no way the tasks before "
                "it can end; fix its after (or `when: any`)"
            )
    return problems


def _can_hold(
    task: Task, line: list[Task], statuses: dict[str, TaskStatus], budget: list[int]
) -> bool:
    """Whether some end of the tasks of `line` (in order) lets `task`'s edges hold."""
    budget[0] -= 1
    if budget[0] < 0:
        return True
    if not line:
        return edges_hold(task, statuses)
    first, rest = line[0], line[1:]
    ends = [TaskStatus.SKIPPED]
    if edges_hold(first, statuses):
        ends = [TaskStatus.SUCCEEDED, TaskStatus.FAILED, *ends[: bool(first.if_set)]]
    return any(_can_hold(task, rest, {**statuses, first.name: end}, budget) for end in ends)


def guaranteed_successes(workflow: Workflow) -> dict[str, frozenset[str]]:
    """For each task, the tasks sure to have SUCCEEDED whenever it runs: a predecessor its
    edge needs to succeed, and those sure before a predecessor that ran (every edge with
    `when: all`; what every edge assures with `when: any`)."""
    sure: dict[str, frozenset[str]] = {}
    for task in topological_order(workflow):
        assured = [
            sure[edge.task] | ({edge.task} if edge.on is EdgeOn.SUCCESS else set())
            for edge in task.after
        ]
        if not assured:
            sure[task.name] = frozenset()
        elif task.when is When.ALL:
            sure[task.name] = frozenset().union(*assured)
        else:
            sure[task.name] = frozenset.intersection(*map(frozenset, assured))
    return sure


def known_variables(workflow: Workflow) -> dict[str, frozenset[str]]:
    """For each task, the variables sure to be set when it runs: the declared ones, and the
    outputs of the tasks sure to have succeeded before it."""
    sure = guaranteed_successes(workflow)
    declared = frozenset(workflow.variables)
    return {
        task.name: declared.union(*(workflow.task(name).outputs for name in sure[task.name]))
        for task in workflow.tasks
    }


def used_variables(task: Task) -> list[str]:
    """The variables a task reads: its query's parameters, its notification's placeholders,
    its if_set."""
    used = list(task.if_set)
    if task.kind is TaskKind.SQL:
        used += [m["name"] for m in _SQL_PARAMETER.finditer(task.spec["query"]) if m["name"]]
    elif task.kind is TaskKind.NOTIFY:
        for text in (task.spec["subject"], task.spec["message"]):
            used += [m["name"] for m in _PLACEHOLDER.finditer(text)]
    return list(dict.fromkeys(used))


def _unknown_variables(workflow: Workflow) -> list[str]:
    known = known_variables(workflow)
    problems = []
    writers: dict[str, list[str]] = {}
    for task in workflow.tasks:
        for output in task.outputs:
            writers.setdefault(output, []).append(task.name)
        unknown = [name for name in used_variables(task) if name not in known[task.name]]
        if unknown:
            problems.append(
                f"task {task.name!r} uses {unknown}, not sure to be set when it runs; declare "
                "it under variables (with a default), or run the task after the one that sets "
                "it on its success"
            )
    for name, tasks in sorted(writers.items()):
        if len(tasks) > 1 or name in workflow.variables:
            also = "and is a declared variable" if name in workflow.variables else ""
            problems.append(
                f"variable {name!r} is set by tasks {tasks} {also}".rstrip()
                + "; let one task set it, into a variable of its own"
            )
    return problems


def _references(
    workflow: Workflow, sources: Collection[str], sql_targets: Collection[str]
) -> list[str]:
    problems = []
    for task in workflow.tasks:
        where = f"task {task.name!r}: "
        if task.kind is TaskKind.INGEST and task.spec["source"] not in sources:
            problems.append(
                where + f"no source {task.spec['source']!r}; add it (sources:) or name one "
                "`sourceflow sources list` shows"
            )
        elif task.kind is TaskKind.SQL:
            if task.spec["target"] not in sql_targets:
                allowed = ", ".join(sorted(sql_targets)) or "none"
                problems.append(
                    where + f"no SQL target {task.spec['target']!r}; the deployment's "
                    f"{SQL_TARGETS_VARIABLE} allows: {allowed}"
                )
            problem = sql_problem(task.spec["query"])
            if problem:
                problems.append(where + "the query " + problem)
        elif task.kind is TaskKind.NOTIFY:
            for text in (task.spec["subject"], task.spec["message"]):
                bad = [m["name"] for m in _PLACEHOLDER.finditer(text) if not _is_name(m["name"])]
                if bad or "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
                    problems.append(
                        where + "a notification's {…} names a variable (a-z, 0-9, _); write "
                        "{name}, and no other braces"
                    )
                    break
    return problems


def _is_name(text: str) -> bool:
    return re.fullmatch(r"[a-z][a-z0-9_]{0,63}", text) is not None


def sql_problem(query: str) -> str | None:
    """What is wrong with a sql task's query, or None: it must parse as one statement (with
    PostgreSQL's own parser, as Re-specs queries are read), bind variables as %(name)s only,
    and write a literal % as %%."""
    names = [m["name"] for m in _SQL_PARAMETER.finditer(query) if m["name"] is not None]
    bad = [name for name in names if not _is_name(name)]
    if bad:
        return f"binds {bad}: write %(name)s with a variable's name"
    numbered = iter(range(1, len(names) + 1))
    parsed = _SQL_PARAMETER.sub(
        lambda m: f"${next(numbered)}" if m["name"] is not None else "%", query
    )
    if "%" in _SQL_PARAMETER.sub("", query):
        return "has a % that binds nothing; write %% for a literal %, %(name)s for a variable"
    try:
        statements = pglast.parse_sql(parsed)
    except pglast.parser.ParseError as exc:
        return f"does not parse: {exc.args[0]}"
    if len(statements) != 1:
        return f"has {len(statements)} statements; write exactly one"
    return None


def run_variables(
    workflow: str, declared: Mapping[str, Any], given: Mapping[str, Any]
) -> dict[str, Any]:
    """A run's variables: the `declared` defaults, with what the run was given instead
    (`--var k=v`)."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        names = ", ".join(sorted(declared)) or "none"
        raise InvalidWorkflow(
            f"workflow {workflow!r} has no variable(s) {unknown}; it declares: {names}"
        )
    return {**declared, **given}


def parse_sql_targets(raw: str) -> dict[str, str]:
    """WORKFLOW_SQL_TARGETS, `{"warehouse": DSN or secret ARN, ...}`, as name -> reference;
    empty: no target. ValueError names the variable and the fix."""
    if not raw.strip():
        return {}
    try:
        targets = json.loads(raw)
    except ValueError:
        targets = None
    if not isinstance(targets, dict) or not all(
        isinstance(name, str) and isinstance(value, str) and value
        for name, value in targets.items()
    ):
        raise ValueError(
            f"environment variable {SQL_TARGETS_VARIABLE} must be a JSON object of target "
            'names to a DSN or a database secret ARN, e.g. {"warehouse": "arn:aws:secrets…"}'
        )
    return targets


def run_name(workflow: str, version: int, started: datetime, nonce: str) -> str:
    """A workflow run's id, its execution's name: `<name>-v<N>-<UTC start>-<nonce>`."""
    return execution_name(f"{workflow}-v{version}", started, nonce)
