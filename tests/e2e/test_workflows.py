"""Workflows after ingestion (issue 21) end to end on the embedded stack: the campaign example
(local/demo_workflows.yaml) applied with `sourceflow apply`, run with `sourceflow workflow run`,
its compiled state machine deciding what runs and the tasks service doing each task — two child
runs of real sources at once, then the warehouse's SQL in order, a notification, and on a
failure the recovery task and an alert.

Each test plays the campaign under a name of its own, over two sources of its own (the file's
sources replaced), with only its own campaign starting today.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from local.demo import CAMPAIGN_RAN
from local.provision import visibility_timeouts
from shared.store.db import Database, fetch_one
from tests.e2e.harness import Cli, Events, Harness, Sources
from tests.e2e.harness.faults import dies_once_after_commit
from tests.e2e.harness.waits import WAIT_SECONDS, wait_for
from tests.e2e.harness.workflow_runs import ALICE, a_file, ended, shown

CAMPAIGN_FILE = Path(__file__).resolve().parents[2] / "local" / "demo_workflows.yaml"
CAMPAIGN_SOURCES = ("demo-listings-a", "demo-partner")
RECORDS = (12, 7)  # each source's records, all newer than its cursor


def campaign_file(tmp_path: Path, name: str, sources: tuple[str, str]) -> Path:
    """The demo's campaign workflow, named `name`, over `sources`, unscheduled (its text
    edited, not re-dumped: the file is YAML 1.2, where `on:` is a key)."""
    text = CAMPAIGN_FILE.read_text()
    edits = {
        "  - name: campaign\n": f"  - name: {name}\n",
        **{
            f"source: {old}\n": f"source: {new}\n"
            for old, new in zip(CAMPAIGN_SOURCES, sources, strict=True)
        },
    }
    for old, new in edits.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    text = re.sub(r"(?m)^\s*schedule_cron:.*\n", "", text)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def only_campaign_today(db: Database, *, starting: bool) -> int:
    """A campaign of the test's own, the only one scheduled to start today if `starting`."""
    campaign_id = uuid.uuid4().int % 1_000_000_000
    with db.transaction() as cur:
        cur.execute("UPDATE public.campaign SET status = 'done' WHERE status = 'scheduled'")
        cur.execute(
            "INSERT INTO public.campaign (campaign_id, name, starts_on, ends_on, status)"
            " VALUES (%s, 'e2e', current_date + %s, current_date + 7, 'scheduled')",
            (campaign_id, 0 if starting else 1),
        )
    return campaign_id


def two_sources(sources: Sources) -> tuple[str, str]:
    """Two vendor sources of the test's own, RECORDS records each to load (their datasets are
    named as the sources are: Sources.source_id_of)."""
    made = []
    for count in RECORDS:
        dataset = sources.new_dataset([timedelta(minutes=5)] * count)
        made.append(sources.new_source(dataset, cursor=None, runtime_count=1, backdate_days=1))
    return made[0], made[1]


def dataset_of(source_id: str) -> str:
    return source_id.removeprefix(Sources.source_id_of(""))


def applied(cli: Cli, path: Path) -> None:
    done = cli.sourceflow("apply", str(path), person=ALICE)
    assert done.returncode == 0, done.stderr


def run_to_its_end(cli: Cli, name: str) -> dict[str, Any]:
    """Run the workflow; returns `workflow show --json` once the run has ended."""
    started = cli.sourceflow("workflow", "run", name, "--json", person=ALICE)
    assert started.returncode == 0, started.stderr
    return ended(cli, json.loads(started.stdout)["run"])


def statuses(shown: Mapping[str, Any]) -> dict[str, str | None]:
    return {task["task"]: task["status"] for task in shown["tasks"]}


def campaign_row(db: Database, campaign_id: int) -> dict[str, Any]:
    with db.transaction() as cur:
        row = fetch_one(
            cur,
            "SELECT c.status, c.listings, (SELECT count(*) FROM public.campaign_cache k"
            " WHERE k.campaign_id = c.campaign_id) AS warmed"
            " FROM public.campaign c WHERE c.campaign_id = %s",
            (campaign_id,),
        )
    assert row is not None
    return row


def task_times(db: Database, run_id: str, *tasks: str) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute(
            "SELECT task, started_at, ended_at, child_run_id FROM public.workflow_task_run"
            " WHERE workflow_run_id = %s AND task = ANY(%s) ORDER BY task",
            (run_id, list(tasks)),
        )
        return [dict(row) for row in cur.fetchall()]


@pytest.fixture
def name(cli: Cli, tmp_path: Path) -> Iterator[str]:
    """The test's campaign's name; afterwards no workflow of the test is left enabled (an
    apply disables what its file drops), for the tests that count what an apply changes."""
    yield f"campaign_{uuid.uuid4().hex[:8]}"
    none = tmp_path / "no-workflows.yaml"
    none.write_text("workflows: []\n")
    applied(cli, none)


def test_an_active_campaign_loads_both_sources_at_once_then_runs_the_sql_in_order(
    cli: Cli, db: Database, sources: Sources, events: Events, tmp_path: Path, name: str
) -> None:
    listings, partner = two_sources(sources)
    applied(cli, campaign_file(tmp_path, name, (listings, partner)))
    campaign_id = only_campaign_today(db, starting=True)

    shown = run_to_its_end(cli, name)

    assert shown["run"]["status"] == "succeeded"
    # publish_campaign ran (AND: both ingests succeeded); mark_failed did not (OR over
    # failures: none failed)
    assert statuses(shown) == CAMPAIGN_RAN
    # The two child runs were under way at the same time, and each one's result became
    # variables the SQL after them bound.
    first, second = task_times(db, shown["run"]["id"], "ingest_listings", "ingest_partner")
    assert first["started_at"] < second["ended_at"] and second["started_at"] < first["ended_at"]
    assert first["child_run_id"] and second["child_run_id"]
    assert campaign_row(db, campaign_id) == {
        "status": "live",
        "listings": sum(RECORDS),
        "warmed": 1,
    }
    publish = next(task for task in shown["tasks"] if task["task"] == "publish_campaign")
    assert publish["variables_seen"]["ingest_listings_records"] == RECORDS[0]
    assert publish["variables_seen"]["campaign_id"] == campaign_id
    told = events.notifications(
        lambda event: event.get("Subject") or event.get("detail-type"),
        {f"Campaign {campaign_id} is live", "Workflow Run Succeeded"},
    )
    assert f"{sum(RECORDS) - RECORDS[1]} + {RECORDS[1]} listings" in json.dumps(told)


def test_a_failing_ingest_runs_the_recovery_task_skips_the_and_and_alerts(
    cli: Cli, db: Database, sources: Sources, events: Events, tmp_path: Path, name: str
) -> None:
    listings, partner = two_sources(sources)
    sources.vendor.fault(dataset_of(partner), fail_status=400, after_records=0)
    applied(cli, campaign_file(tmp_path, name, (listings, partner)))
    campaign_id = only_campaign_today(db, starting=True)

    shown = run_to_its_end(cli, name)

    assert shown["run"]["status"] == "failed"
    assert statuses(shown) == {
        **CAMPAIGN_RAN,
        "ingest_partner": "failed",
        "publish_campaign": "skipped",  # AND: one of its two predecessors failed
        "warm_caches": "skipped",
        "announce": "skipped",
        "mark_failed": "succeeded",  # OR: one failure is enough
        # aggregate_metrics still ran: on the completion of the recovery
    }
    failed = next(task for task in shown["tasks"] if task["task"] == "ingest_partner")
    assert "ended failed" in failed["error"]
    assert campaign_row(db, campaign_id)["status"] == "failed"
    alerts = wait_for(lambda: events.alerts_about(name) or None, f"the alert of {name}")
    assert "ingest_partner" in alerts[0]
    told = events.notifications(lambda event: event.get("detail-type"), {"Workflow Run Failed"})
    assert told["Workflow Run Failed"]["detail"]["failed_tasks"] == ["ingest_partner"]


def test_no_campaign_starting_today_runs_nothing_but_the_check(
    cli: Cli, db: Database, sources: Sources, tmp_path: Path, name: str
) -> None:
    listings, partner = two_sources(sources)
    applied(cli, campaign_file(tmp_path, name, (listings, partner)))
    campaign_id = only_campaign_today(db, starting=False)

    shown = run_to_its_end(cli, name)

    assert shown["run"]["status"] == "succeeded"
    ran = {task: status for task, status in statuses(shown).items() if status != "skipped"}
    assert ran == {"check_campaign": "succeeded"}
    assert campaign_row(db, campaign_id)["status"] == "scheduled"
    with db.transaction() as cur:
        cur.execute(
            "SELECT count(*) AS runs FROM public.source_run WHERE source_id IN (%s, %s)",
            (listings, partner),
        )
        assert cur.fetchone()["runs"] == 0


def test_a_tasks_worker_that_dies_after_its_commit_is_answered_for_and_the_sql_runs_once(
    harness: Harness, db: Database, tmp_path: Path, name: str
) -> None:
    # Given a workflow whose sql task adds one to a campaign's count, and tasks workers of which
    # the first to commit a task's end dies before it answers (local/worker.py's fault point)
    campaign_id = only_campaign_today(db, starting=False)
    query = (
        "UPDATE public.campaign SET listings = coalesce(listings, 0) + 1"
        f" WHERE campaign_id = {campaign_id} RETURNING listings"
    )
    applied(harness, a_file(tmp_path, name, query=query))
    with dies_once_after_commit(harness.stack, "tasks", tmp_path) as marker:
        started = harness.sourceflow("workflow", "run", name, "--json", person=ALICE)
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["run"]

        # When SQS hands the message out again, once its visibility timeout ends
        redelivered = visibility_timeouts(harness.stack.options.timeouts)["tasks"]
        document = wait_for(
            lambda: (found := shown(harness, run_id))["run"]["status"] != "running" and found,
            f"workflow run {run_id} to end after the redelivery",
            timeout=redelivered + WAIT_SECONDS,
        )

    # Then the worker did die there, the redelivery answered what the first delivery committed,
    # and the statement ran once
    assert marker.exists()
    assert document["run"]["status"] == "succeeded"
    count = next(task for task in document["tasks"] if task["task"] == "count")
    assert (count["status"], count["output"]["variables"]) == ("succeeded", {"campaigns": 1})
    with db.transaction() as cur:
        row = fetch_one(
            cur, "SELECT listings FROM public.campaign WHERE campaign_id = %s", (campaign_id,)
        )
    assert row == {"listings": 1}
