"""The operator's command against the embedded stack: every subcommand, both output forms, and
one clear line when something is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from shared.rules.flows import DEFAULT_LATENESS_ALLOWANCE, overlap
from shared.rules.respecs import InvalidRespecsQuery, check_respecs_query, parse_allowed_tables
from tests.builders import listing
from tests.e2e.harness import WAIT_SECONDS, Harness

DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)


def ok(harness: Harness, *args: str, person: str | None = None) -> str:
    completed = harness.sourceflow(*args, person=person)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def fails(harness: Harness, *args: str) -> str:
    completed = harness.sourceflow(*args)
    assert completed.returncode != 0, completed.stdout
    assert "Traceback" not in completed.stderr + completed.stdout
    return completed.stderr


def test_sources_list_and_show_in_both_forms(harness: Harness) -> None:
    cursor = datetime.now(UTC) - 2 * DAY
    source_id = harness.new_source(
        harness.new_dataset([DAY]), runtime_count=3, cursor=cursor, params={"type": "SOLD"}
    )
    assert harness.run(source_id).status == "SUCCEEDED"

    [row] = [
        r
        for r in json.loads(ok(harness, "sources", "list", "--json"))
        if r["source_id"] == source_id
    ]
    assert (row["source_type"], row["flow"], row["runtime_count"]) == ("http_api", "Sold", 4)
    assert row["last_run_status"] == "succeeded" and row["locked_by"] is None
    assert source_id in ok(harness, "sources", "list")

    shown = json.loads(ok(harness, "sources", "show", source_id, "--json"))
    assert shown["source"]["source_id"] == source_id
    assert [run["status"] for run in shown["runs"]] == ["succeeded"]
    assert shown["flow_history"][0]["to_params"] == {"type": "SOLD"}
    table = ok(harness, "sources", "show", source_id)
    assert "last runs" in table and "flow history" in table

    assert "unknown source 'nope'" in fails(harness, "sources", "show", "nope")


def test_flow_set_writes_canonical_params_and_records_who_and_why(harness: Harness) -> None:
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    sql = f"UPDATE public.listing_attributes SET value = 'x' WHERE source_id = '{source_id}'"
    cases = [
        (["sold", "--year", "2021"], {"flow_type": "Sold", "year": 2021}),
        (["full-load"], {"flow_type": "Full Load"}),
        (["respecs", "--sql", sql], {"flow_type": "Re-specs", "sql": sql}),
        (
            ["normal", "--reset-at", "2030-01-01"],
            {"flow_type": "Normal", "reset_at": "2030-01-01T00:00:00Z"},
        ),
    ]
    for args, expected in cases:
        written = json.loads(
            ok(harness, "flow", "set", source_id, *args, "--reason", "test", "--json", person="bob")
        )
        assert written["batch_execution_params"] == expected
        assert harness.run_source_row(source_id)["batch_execution_params"] == expected
        change = harness.flow_history(source_id)[-1]
        assert (change["changed_by"], change["reason"]) == ("bob", "test")
    assert "batch_execution_params =" in ok(harness, "flow", "set", source_id, "normal")


def test_flow_set_refuses_a_query_validation_would_refuse_with_its_message(
    harness: Harness,
) -> None:
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    before = harness.run_source_row(source_id)["batch_execution_params"]
    bad = "DELETE FROM public.listing_attributes WHERE true"
    with pytest.raises(InvalidRespecsQuery) as validation_says:
        check_respecs_query(source_id, bad, parse_allowed_tables("public.listing_attributes"))
    assert str(validation_says.value) in fails(
        harness, "flow", "set", source_id, "respecs", "--sql", bad
    )
    assert harness.run_source_row(source_id)["batch_execution_params"] == before
    usage = harness.sourceflow("flow", "set", source_id, "respecs")
    assert usage.returncode == 2 and "--sql" in usage.stderr


def test_run_wait_follows_the_steps_and_reports_the_outcome(harness: Harness) -> None:
    source_id = harness.new_source(
        harness.new_dataset([DAY, DAY / 2]), runtime_count=3, cursor=datetime.now(UTC) - 2 * DAY
    )
    out = ok(harness, "run", source_id, "--wait")
    for step in ("Validate", "Download", "UnlockAfterSuccess", "SUCCEEDED"):
        assert step in out
    assert "2 records" in out

    harness.set_params(source_id, {"type": "Weekly"})
    completed = harness.sourceflow("run", source_id, "--wait")
    assert completed.returncode == 1
    assert "InvalidFlowParams in Validate" in completed.stdout
    assert "'Weekly'" in completed.stdout


def test_run_without_wait_requests_a_run_that_then_happens(harness: Harness) -> None:
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    assert f"run requested for {source_id}" in ok(harness, "run", source_id)
    harness.wait_for_scheduler()
    [execution] = harness.executions_of(source_id)
    assert harness.finish(execution["executionArn"], source_id).status == "SUCCEEDED"
    assert "unknown source 'nope'" in fails(harness, "run", "nope")


def test_runs_lists_the_ledger_newest_first_with_filters(harness: Harness) -> None:
    source_id = harness.new_source(
        harness.new_dataset([DAY]), runtime_count=3, cursor=datetime.now(UTC) - 2 * DAY
    )
    first, second = harness.run(source_id), harness.run(source_id)
    rows = json.loads(ok(harness, "runs", "--source", source_id, "--json"))
    assert [r["execution_arn"] for r in rows] == [second.execution_arn, first.execution_arn]
    assert rows[0]["records"] == 0 and rows[1]["records"] == 1
    assert rows[0]["duration_seconds"] > 0
    assert (
        json.loads(ok(harness, "runs", "--source", source_id, "--status", "failed", "--json")) == []
    )
    future = (datetime.now(UTC) + DAY).strftime("%Y-%m-%d")
    assert json.loads(ok(harness, "runs", "--since", future, "--json")) == []
    assert source_id in ok(harness, "runs", "--source", source_id)


def test_status_shows_queues_running_locks_and_the_last_tick(harness: Harness) -> None:
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    now = datetime.now(UTC)
    harness.set_lock(source_id, "arn:dead", now - timedelta(hours=1), now - timedelta(minutes=1))
    harness.tick()
    report = json.loads(ok(harness, "status", "--json"))
    assert [q["service"] for q in report["queues"]] == [
        "validation",
        "download",
        "unlocking",
        "scheduler",
        "tasks",
    ]
    [lock] = [row for row in report["locked"] if row["source_id"] == source_id]
    assert lock["lease_expired"] is True
    assert [tick["rule"] for tick in report["scheduler_ticks"]] == ["sourceflow-local-tick"]
    table = ok(harness, "status")
    assert "queues" in table and "scheduler ticks" in table and source_id in table
    harness.set_lock(source_id, None)


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, "DATABASE_URL is not set"),
        (
            {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
            "is the database up, and DATABASE_URL (from the environment) right?",
        ),
    ],
    ids=["nothing-configured", "database-down"],
)
def test_a_missing_or_broken_dependency_is_one_clear_line(
    tmp_path: Path, environment: dict[str, str], expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AWS_ENDPOINT_URL")}
    completed = subprocess.run(
        [sys.executable, "-m", "ops.cli", "sources", "list", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        env={**env, **environment},
    )
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    [line] = completed.stderr.strip().splitlines()
    assert expected in line


def test_run_wait_shows_the_download_progress_from_heartbeats(harness: Harness) -> None:
    # Given a download of eight one-record pages, 0.6 s each (heartbeats every second)
    source_id = harness.slow_source(pages=8, delay_ms=600, runtime_count=3).source_id
    # When the run is followed, Then the progress the heartbeats wrote is shown as it grows
    out = ok(harness, "run", source_id, "--wait")
    progress = [line for line in out.splitlines() if "records" in line and "so far" in line]
    assert progress, out
    # bytes are counted as parts are written: none is said before the first one is
    assert not [line for line in progress if " 0 bytes" in line], out
    assert "8 records" in out.splitlines()[-1]


def test_audit_finds_the_windows_of_real_normal_runs_whole(harness: Harness) -> None:
    # Given a vendor source that has run before, and three Normal runs with fresh records
    # stamped before each of them
    now = datetime.now(UTC)
    dataset = harness.new_dataset([DAY, DAY / 2], now=now)
    source_id = harness.new_source(dataset, runtime_count=3, cursor=now - 2 * DAY)
    results = []
    for index in range(2, 5):
        harness.vendor.put(dataset, [listing(dataset, index, datetime.now(UTC) - MINUTE)])
        results.append(harness.run(source_id))
    assert [result.status for result in results] == ["SUCCEEDED"] * 3

    # When the operator audits it
    completed = harness.sourceflow("audit", source_id, "--json")

    # Then the windows are whole, each reaching back the allowance before the one before
    assert completed.returncode == 0, completed.stdout + completed.stderr
    audited = json.loads(completed.stdout)
    assert (audited["source_id"], audited["gaps"]) == (source_id, [])
    runs = audited["runs"]
    assert [run["execution_name"] for run in runs] == [
        result.execution_arn.rsplit(":", 1)[1] for result in results
    ]
    assert {run["flow_type"] for run in runs} == {"normal"}
    assert [run["records"] for run in runs] == [3, 1, 1]
    # (each window re-read the versions the runs before it landed in its overlap, and skipped
    # them)
    assert [run["duplicates_skipped"] for run in runs] == [0, 1, 2]
    overlap_seconds = overlap(DEFAULT_LATENESS_ALLOWANCE).total_seconds()
    for previous, current in pairwise(runs):
        reach = datetime.fromisoformat(previous["window_end"]) - datetime.fromisoformat(
            current["window_start"]
        )
        assert reach.total_seconds() >= overlap_seconds
    assert audited["cursor"] == runs[-1]["cursor_after"]
    assert "no gap: the windows of 3 runs cover" in ok(harness, "audit", source_id)
