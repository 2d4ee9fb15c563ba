"""A run an operator can inspect and follow without SQL or the AWS CLI: `sourceflow run` names
the execution, `sourceflow runs show RUN` shows it whole, `sourceflow run watch RUN` follows
one already going."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.e2e.harness import WAIT_SECONDS, Harness

DAY = timedelta(days=1)


def ok(harness: Harness, *args: str, person: str | None = None) -> str:
    completed = harness.sourceflow(*args, person=person)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def shown(harness: Harness, run: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ok(harness, "runs", "show", run, "--json"))
    return document


def sourceflow_command(harness: Harness, *args: str) -> list[str]:
    """The operator's command against the stack, to start and interrupt as a person would."""
    state_dir = str(harness.stack.options.state_dir)
    return [sys.executable, "-m", "ops.cli", *args, "--state-dir", state_dir]


def steps(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(step["step"], step["status"]) for step in document["steps"]]


def test_runs_show_a_succeeded_run_whole(harness: Harness) -> None:
    cursor = datetime.now(UTC) - 2 * DAY
    source_id = harness.new_source(
        harness.new_dataset([DAY, DAY / 2]), runtime_count=3, cursor=cursor
    )
    result = harness.run(source_id)
    assert result.status == "SUCCEEDED"
    name = result.execution_arn.rsplit(":", 1)[1]

    document = shown(harness, name)
    assert steps(document) == [
        ("Validate", "succeeded"),
        ("RunOrSkip", "succeeded"),
        ("StartDownload", "succeeded"),
        ("Download", "succeeded"),
        ("MoreToDownload", "succeeded"),
        ("UnlockAfterSuccess", "succeeded"),
        ("PublishRunSucceeded", "succeeded"),
        ("Succeeded", "succeeded"),
    ]
    assert all(step["started_at"] and step["ended_at"] for step in document["steps"])
    run = document["run"]
    ledger = result.run
    assert (run["execution_name"], run["source_id"], run["status"]) == (
        name,
        source_id,
        "succeeded",
    )
    assert (run["records"], run["malformed_records"]) == (2, ledger["malformed_records"])
    assert run["bytes"] == ledger["bytes"] and run["objects"] == ledger["objects"]
    assert run["download_invocations"] == 1
    assert run["cursor_before"] and run["cursor_after"] and run["window_start"]
    bucket = harness.stack.env["RAW_BUCKET"]
    assert run["manifest"] == f"s3://{bucket}/{ledger['manifest_key']}"
    assert run["asked_by"] == "started outside the scheduler"
    assert document["steps_unavailable"] is None
    # The ARN finds the same run
    assert shown(harness, result.execution_arn)["run"] == run

    table = ok(harness, "runs", "show", name)
    assert "steps" in table and "UnlockAfterSuccess" in table and "succeeded" in table
    print(table)
    assert "cursor " in table and " → " in table and "manifest" in table


def test_runs_show_a_failed_run_names_the_step_the_error_and_what_was_not_reached(
    harness: Harness,
) -> None:
    dataset = harness.new_dataset([DAY])
    source_id = harness.new_source(dataset, runtime_count=3, cursor=datetime.now(UTC) - 2 * DAY)
    harness.vendor.fault(dataset, fail_status=400, after_records=0)
    result = harness.run(source_id)
    assert result.status == "FAILED"

    document = shown(harness, result.execution_arn.rsplit(":", 1)[1])
    statuses = dict(steps(document))
    assert statuses["Download"] == "failed"
    assert statuses["UnlockAfterFailure"] == "succeeded"
    assert statuses["UnlockAfterSuccess"] == "not reached"
    [download] = [step for step in document["steps"] if step["step"] == "Download"]
    assert download["error"] == "SourceRequestRejected"
    run = document["run"]
    assert (run["status"], run["failed_step"], run["error"]) == (
        "failed",
        "Download",
        "SourceRequestRejected",
    )
    assert run["error_detail"] == result.run["error_detail"]
    assert run["cursor_after"] is None and run["manifest"] is None


def test_run_prints_the_execution_it_starts_as(harness: Harness) -> None:
    source_id = harness.new_source(
        harness.new_dataset([DAY]), runtime_count=3, cursor=datetime.now(UTC) - DAY
    )
    said = ok(harness, "run", source_id, person="alice")
    assert said.startswith(f"run requested for {source_id}: execution {source_id}-")
    name = said.split("execution ", 1)[1].split()[0]
    harness.wait_for_scheduler()
    [execution] = harness.executions_of(source_id)
    assert execution["name"] == name
    assert harness.finish(execution["executionArn"], source_id).status == "SUCCEEDED"
    run = shown(harness, name)["run"]
    assert run["status"] == "succeeded"
    assert run["asked_by"] == "alice, with `sourceflow run`"


def test_run_watch_follows_a_run_already_going_to_its_end(harness: Harness) -> None:
    # A download that goes on for as long as the test may wait (a page a second), until the
    # test lets the vendor answer at once: on a loaded machine, each command below may take
    # seconds to start, and the run must still be under way when it asks
    pages = int(WAIT_SECONDS)
    slow = harness.slow_source(pages=pages, delay_ms=1000, runtime_count=3)
    arn = harness.start(slow.source_id)
    name = arn.rsplit(":", 1)[1]
    harness.wait_until_downloading(arn, records=1)

    # While it downloads, `runs show` says where it is
    under_way = dict(steps(shown(harness, name)))
    assert under_way["Download"] == "in progress"
    assert under_way["UnlockAfterSuccess"] == "not reached"

    # Ctrl-C stops the watching, not the run
    watching = subprocess.Popen(
        sourceflow_command(harness, "run", "watch", name),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watching.stdout is not None
    assert watching.stdout.readline().strip() == f"execution {name}"
    watching.send_signal(signal.SIGINT)
    _, stopped = watching.communicate(timeout=WAIT_SECONDS)
    assert watching.returncode == 130
    assert (
        stopped.strip()
        == f"stopped watching; run {name} goes on (`sourceflow cancel {name}` stops it)"
    )

    harness.vendor.fault(slow.dataset, page_delay_ms=0)
    completed = harness.sourceflow("run", "watch", name)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == f"execution {name}"
    assert any("Download" in line and "succeeded" in line for line in lines)
    assert any("UnlockAfterSuccess" in line for line in lines)
    assert "SUCCEEDED" in lines[-1] and f"{pages} records" in lines[-1]


def test_runs_show_a_cancelled_run_says_who_cancelled_it_and_where(harness: Harness) -> None:
    slow = harness.slow_source(pages=int(2 * WAIT_SECONDS), delay_ms=500, runtime_count=3)
    arn = harness.start(slow.source_id)
    name = arn.rsplit(":", 1)[1]
    harness.wait_until_downloading(arn, records=1)
    ok(harness, "cancel", name, "--reason", "wrong dataset", person="alice")
    harness.finish(arn, slow.source_id)

    document = shown(harness, name)
    statuses = dict(steps(document))
    assert (statuses["Download"], statuses["RunCancelled"]) == ("cancelled", "cancelled")
    assert statuses["UnlockAfterFailure"] == "succeeded"
    run = document["run"]
    assert (run["status"], run["failed_step"]) == ("cancelled", "Download")
    assert run["cancelled_by"] == "alice: wrong dataset"


def test_an_unknown_run_is_one_line_naming_it_and_how_to_list_runs(harness: Harness) -> None:
    for command in (("runs", "show", "nope-123"), ("run", "watch", "nope-123")):
        completed = harness.sourceflow(*command)
        assert completed.returncode == 1
        [line] = completed.stderr.strip().splitlines()
        assert "'nope-123'" in line and "`sourceflow runs`" in line


def test_without_a_region_runs_show_says_what_the_database_has(
    harness: Harness, tmp_path: Path
) -> None:
    source_id = harness.new_source(
        harness.new_dataset([DAY]), runtime_count=3, cursor=datetime.now(UTC) - DAY
    )
    name = harness.run(source_id).execution_arn.rsplit(":", 1)[1]
    local_env = (harness.stack.options.state_dir / "local.env").read_text().splitlines()
    (tmp_path / "local.env").write_text(
        "\n".join(line for line in local_env if not line.startswith("AWS_")) + "\n"
    )
    completed = subprocess.run(
        [sys.executable, "-m", "ops.cli", "runs", "show", name, "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        },
    )
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stdout + completed.stderr
    assert name in completed.stdout and "succeeded" in completed.stdout
    [unavailable] = [line for line in completed.stdout.splitlines() if "step history" in line]
    assert unavailable.startswith("step history unavailable: no AWS region")
