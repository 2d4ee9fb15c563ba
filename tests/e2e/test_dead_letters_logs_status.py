"""Dead letters, logs and status as an operator uses them on the embedded stack: `dlq replay
--dry-run` says what would fail again, `dlq delete` and `dlq purge` ask first and keep a copy,
`logs --run` gives a run's lines from every service, and `status` says what it can reach when
a part is down."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.runtime.contracts import CONTRACTS_DIR
from tests.e2e.harness import Harness

DAY = timedelta(days=1)
UNREACHABLE = "http://127.0.0.1:1"


def ok(harness: Harness, *args: str, person: str | None = None, answer: str = "") -> str:
    completed = harness.sourceflow(*args, person=person, answer=answer)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def fails(harness: Harness, *args: str, answer: str = "") -> str:
    """The command's one-line error (exit 1, no traceback)."""
    completed = harness.sourceflow(*args, answer=answer)
    assert completed.returncode == 1, completed.stdout
    assert "Traceback" not in completed.stderr + completed.stdout
    [line] = completed.stderr.strip().splitlines()[-1:]
    return line


def _example(name: str) -> dict[str, Any]:
    path = sorted((CONTRACTS_DIR / "examples" / f"{name}.v1" / "valid").glob("*.json"))[0]
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def _in_dlq(harness: Harness, ids: set[str]) -> set[str]:
    listed = json.loads(ok(harness, "dlq", "list", "download", "--json"))
    return {row["message_id"] for row in listed} & ids


def test_dead_letters_are_judged_then_deleted_and_purged_each_kept(harness: Harness) -> None:
    # Given three dead letters of the download queue: not JSON, a version no schema has, and
    # a valid task message of an execution that does not exist
    sqs, dlq_url = harness.aws("sqs"), harness.stack.env["DOWNLOAD_DLQ_URL"]
    request = _example("download-request")
    bodies = {
        "not-json": "{this is not json",
        "unknown-version": json.dumps({**request, "version": 99}),
        "task-over": json.dumps(request),
    }
    sent = {
        name: sqs.send_message(QueueUrl=dlq_url, MessageBody=body)["MessageId"]
        for name, body in bodies.items()
    }
    ids = set(sent.values())

    # When a replay is tried dry, Then each says what would happen, and nothing changes
    dry = {
        row["message_id"]: row
        for row in json.loads(ok(harness, "dlq", "replay", "download", "--dry-run", "--json"))
    }
    assert dry[sent["not-json"]]["action"] == "would fail again"
    assert "download-request message is not JSON" in dry[sent["not-json"]]["reason"]
    assert dry[sent["unknown-version"]]["action"] == "would fail again"
    assert "version 99, which has no schema" in dry[sent["unknown-version"]]["reason"]
    assert dry[sent["task-over"]]["action"] == "would park"
    assert _in_dlq(harness, ids) == ids

    # When the operator names an unknown queue or message, Then it is refused by name
    assert "unknown queue 'downlaod'" in fails(harness, "dlq", "purge", "downlaod", "--yes")
    assert "no dead letter 'nope' in sourceflow-local-download-dlq" in fails(
        harness, "dlq", "delete", "download", "nope", "--yes"
    )
    # And a deletion not confirmed changes nothing
    assert "Aborted" in fails(harness, "dlq", "delete", "download", sent["not-json"], answer="n\n")
    assert _in_dlq(harness, ids) == ids

    # When alice confirms the deletion of one
    deleted = json.loads(
        ok(
            harness,
            "dlq",
            "delete",
            "download",
            sent["not-json"],
            "--json",
            person="alice",
            answer="y\n",
        )
    )
    # Then it is gone from the DLQ, and kept with who deleted it
    assert [row["message_id"] for row in deleted] == [sent["not-json"]]
    assert _in_dlq(harness, ids) == ids - {sent["not-json"]}
    assert _kept(harness, sent["not-json"]) == (
        bodies["not-json"],
        "deleted by alice with `sourceflow dlq delete`",
    )

    # When the DLQ is purged without a question, Then the rest is gone, each kept
    purged = json.loads(ok(harness, "dlq", "purge", "download", "--yes", "--json"))
    assert {row["message_id"] for row in purged} >= ids - {sent["not-json"]}
    assert _in_dlq(harness, ids) == set()
    assert _kept(harness, sent["task-over"])[1].endswith("with `sourceflow dlq purge`")
    assert "deleted from download's DLQ: 0" in ok(harness, "dlq", "purge", "download", "--yes")


def _kept(harness: Harness, message_id: str) -> tuple[str, str]:
    with harness.db.transaction() as cur:
        cur.execute(
            "SELECT body, reason FROM public.parked_message"
            " WHERE queue = 'sourceflow-local-download-dlq' AND message_id = %s",
            (message_id,),
        )
        row = cur.fetchone()
    assert row is not None
    return row["body"], row["reason"]


def test_logs_give_a_runs_lines_from_every_service(harness: Harness) -> None:
    # Given a run that succeeded
    result = harness.run(harness.new_source(harness.new_dataset([DAY]), runtime_count=2))
    assert result.status == "SUCCEEDED"
    name = result.execution_arn.rsplit(":", 1)[1]

    # When its log lines are asked for (by its name; its ARN does as well)
    lines = json.loads(ok(harness, "logs", "--run", name, "--json"))
    assert lines == json.loads(ok(harness, "logs", "--run", result.execution_arn, "--json"))

    # Then each service the run went through gave lines of it, oldest first
    assert {"validation", "download", "unlocking"} <= {line["service"] for line in lines}
    assert [line["time"] for line in lines] == sorted(line["time"] for line in lines)
    done = [line for line in lines if line["message"] == "task done"]
    assert {line["fields"]["execution_arn"] for line in done} == {result.execution_arn}
    # And the readable form is one line each, naming the worker and the run
    text = ok(harness, "logs", "--run", name, "--service", "download").splitlines()
    assert text and all(line.split()[1].startswith("download-") for line in text)
    assert any(f"run={name}" in line and "records=" in line for line in text)
    # And nothing is said of a later time, or of another run
    later = (datetime.now(UTC) + DAY).strftime("%Y-%m-%d")
    assert ok(harness, "logs", "--run", name, "--since", later).strip() == (
        f"no log lines mention run {name}"
    )


def test_status_lists_what_waits_and_what_failed_and_shows_what_it_reaches(
    harness: Harness,
) -> None:
    # Given a run that failed, and a backfill that waits for a second person
    failed = harness.run(harness.new_source(harness.unique_name(), runtime_count=2))
    assert failed.status == "FAILED"
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=2)
    asked = json.loads(
        ok(
            harness,
            "backfill",
            source_id,
            "--from",
            "2020-01-01",
            "--to",
            "2024-01-01",
            "--slice",
            "30d",
            "--json",
            person="alice",
        )
    )
    backfill = str(asked["backfill_id"])
    try:
        # When the operator asks for the status
        report = json.loads(ok(harness, "status", "--json"))

        # Then it lists what waits for approval, with the command that decides it
        [waiting] = [row for row in report["pending_approvals"] if row["id"] == backfill]
        assert (waiting["what"], waiting["source_id"], waiting["requested_by"]) == (
            "backfill",
            source_id,
            "alice",
        )
        assert waiting["decide_with"] == f"sourceflow backfill approve|reject {backfill}"
        # And the runs that failed lately, with their step and error
        name = failed.execution_arn.rsplit(":", 1)[1]
        [failure] = [row for row in report["recent_failures"] if row["execution_name"] == name]
        assert failure["error"] == failed.run["error"]
        assert report["unreachable"] == []
        table = ok(harness, "status")
        assert "waiting for approval" in table and "failed in the last 24 hours" in table
    finally:
        ok(harness, "backfill", "reject", backfill, "--reason", "a test's", person="bob")

    # When the database cannot be reached, Then the queues still show, and the database is
    # named as unreachable (exit 1, one line, no traceback)
    down = harness.sourceflow(
        "status", "--json", environment={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}
    )
    assert down.returncode == 1 and "Traceback" not in down.stderr
    report = json.loads(down.stdout)
    assert [queue["service"] for queue in report["queues"]] == [
        "validation",
        "download",
        "unlocking",
        "scheduler",
        "tasks",
    ]
    assert report["locked"] is None and report["pending_approvals"] is None
    [database] = report["unreachable"]
    assert database["part"] == "the database" and "connect" in database["error"]
    printed = harness.sourceflow(
        "status", environment={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}
    )
    assert "queues" in printed.stdout
    assert printed.stderr.startswith("cannot reach the database: ")

    # And when AWS cannot be reached, Then what the database says still shows
    down = harness.sourceflow("status", "--json", environment={"AWS_ENDPOINT_URL": UNREACHABLE})
    assert down.returncode == 1 and "Traceback" not in down.stderr
    report = json.loads(down.stdout)
    assert report["queues"] is None and report["running"] is None
    assert isinstance(report["recent_failures"], list)
    assert [part["part"] for part in report["unreachable"]] == ["SQS", "Step Functions"]
    assert all(UNREACHABLE in part["error"] for part in report["unreachable"])
