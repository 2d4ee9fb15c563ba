"""`sourceflow apply` with workflows, `sourceflow workflow run|runs|show|list` and a scheduled
workflow, on the embedded stack with the tasks service: each version its own state machine,
every run recording the version it ran, each task's status and the variables it saw.
(The campaign itself, every path of it, is test_workflows.py's.)"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.store.db import Database
from tests.e2e.harness import Cli, Ticks
from tests.e2e.harness.workflow_runs import ALICE, a_file, ended


def statuses(document: Mapping[str, Any]) -> dict[str, Any]:
    return {task["task"]: task["status"] for task in document["tasks"]}


def test_apply_registers_versions_and_a_run_says_each_task_and_what_it_saw(
    cli: Cli, tmp_path: Path
) -> None:
    name = f"count_{uuid.uuid4().hex[:8]}"
    applied = cli.sourceflow("apply", str(a_file(tmp_path, name)), "--json", person=ALICE)
    assert applied.returncode == 0, applied.stderr
    # (a workflow another test file on this stack left registered is disabled by this file)
    assert [w for w in json.loads(applied.stdout)["workflows"] if w["workflow"] == name] == [
        {"workflow": name, "action": "add", "version": 1}
    ]
    again = cli.sourceflow("apply", str(a_file(tmp_path, name)), person=ALICE)
    assert "no changes: the registered workflows match" in again.stdout
    exported = tmp_path / "exported.yaml"
    assert (
        cli.sourceflow("workflow", "export", "--output", str(exported), person=ALICE).returncode
        == 0
    )
    reapplied = cli.sourceflow("apply", str(exported), "--json", person=ALICE)
    assert json.loads(reapplied.stdout)["workflows"] == []

    started = cli.sourceflow(
        "workflow", "run", name, "--var", "channel=#data", "--json", person=ALICE
    )
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run"]
    document = ended(cli, run_id)

    assert document["run"]["status"] == "succeeded"
    assert document["run"]["version"] == 1
    assert document["run"]["requested_by"] == ALICE
    assert statuses(document) == {"count": "succeeded", "say": "succeeded", "recover": "skipped"}
    say = next(task for task in document["tasks"] if task["task"] == "say")
    assert say["variables_seen"]["channel"] == "#data"
    assert "campaigns" in say["variables_seen"]

    # A changed definition is version 2; its runs say so, the first run still says 1.
    changed = a_file(tmp_path, name, query="SELECT 1/0")
    applied = cli.sourceflow("apply", str(changed), "--json", person=ALICE)
    assert json.loads(applied.stdout)["workflows"] == [
        {"workflow": name, "action": "new version", "version": 2}
    ]
    run_id_2 = json.loads(cli.sourceflow("workflow", "run", name, "--json", person=ALICE).stdout)[
        "run"
    ]
    failed = ended(cli, run_id_2)
    assert failed["run"]["version"] == 2
    assert failed["run"]["status"] == "failed"
    assert statuses(failed) == {"count": "failed", "say": "skipped", "recover": "succeeded"}
    assert cli.sourceflow("workflow", "show", run_id_2, person=ALICE).returncode == 1

    listed = json.loads(cli.sourceflow("workflow", "runs", name, "--json", person=ALICE).stdout)
    assert [(run["id"], run["version"], run["status"]) for run in listed] == [
        (run_id_2, 2, "failed"),
        (run_id, 1, "succeeded"),
    ]


def test_a_file_with_a_broken_workflow_is_refused_whole_naming_the_task_and_the_fix(
    cli: Cli, tmp_path: Path
) -> None:
    name = f"broken_{uuid.uuid4().hex[:8]}"
    path = a_file(tmp_path, name, query="SELECT %(nope)s")

    refused = cli.sourceflow("apply", str(path), person=ALICE)

    assert refused.returncode == 1
    assert "nothing applied" in refused.stderr
    assert f"workflow '{name}': task 'count' uses ['nope']" in refused.stderr
    assert "Traceback" not in refused.stderr
    listed = json.loads(cli.sourceflow("workflow", "list", "--json", person=ALICE).stdout)
    assert name not in [workflow["name"] for workflow in listed]


def test_a_scheduled_workflow_runs_from_its_next_slot_once_per_slot_as_the_scheduler(
    cli: Cli, ticks: Ticks, db: Database, tmp_path: Path
) -> None:
    name = f"every_{uuid.uuid4().hex[:8]}"
    path = a_file(tmp_path, name, schedule_interval="1m")
    assert cli.sourceflow("apply", str(path), person=ALICE).returncode == 0
    next_minute = datetime.now(UTC) + timedelta(minutes=1)

    try:
        ticks.tick(at=next_minute)
        ticks.tick(at=next_minute)  # a duplicate tick: the slot is taken
    finally:
        # No later tick of the session starts it again (its notifications are not theirs).
        with db.transaction() as cur:
            cur.execute("UPDATE public.workflow SET enabled = false WHERE name = %s", (name,))

    with db.transaction() as cur:
        cur.execute(
            "SELECT id, requested_by, version FROM public.workflow_run WHERE workflow = %s", (name,)
        )
        started = cur.fetchall()
    slot = next_minute.replace(second=0, microsecond=0).strftime("%Y%m%dT%H%M%SZ")
    assert [row["id"] for row in started] == [f"{name}-v1-{slot}-sched"]
    assert started[0]["requested_by"] == "sourceflow_scheduler"
    assert ended(cli, started[0]["id"])["run"]["status"] == "succeeded"
