"""Faults on the embedded stack: duplicates, crashed workers, a database outage, poison
messages and their replay, expired tasks, a stampede on one source, dead lock owners, malformed
messages, alerts. Each checks the end state of the source row, the ledger and the raw bucket."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2

from infra.resources import Names
from local.roles import cut_off, restore
from ops.dlq import held
from shared.runtime import contracts
from tests.e2e.harness import Harness, RunResult, wait_for

DAY = timedelta(days=1)


def _snapshot(harness: Harness, result: RunResult) -> tuple[Any, ...]:
    name = result.execution_arn.rsplit(":", 1)[1]
    with harness.db.transaction() as cur:
        cur.execute(
            "SELECT s::text FROM public.source s WHERE source_id = %s", (result.run["source_id"],)
        )
        source = cur.fetchone()["s"]
        cur.execute(
            "SELECT r::text FROM public.source_run r WHERE execution_arn = %s",
            (result.execution_arn,),
        )
        run = cur.fetchone()["r"]
    objects = harness.raw_objects(f"{result.run['source_id']}/{name}/")
    return source, run, {key: hashlib.sha256(body).hexdigest() for key, body in objects.items()}


@contextmanager
def _admin(harness: Harness) -> Iterator[Any]:
    conn = psycopg2.connect(harness.stack.env["DATABASE_URL"])
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def _drain_dlq(harness: Harness, service: str) -> None:
    sqs = harness.aws("sqs")
    with held(sqs, Names("local"), service) as (dlq_url, letters):
        for letter in letters:
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=letter.receipt_handle)


def _dead_letters(harness: Harness, service: str) -> list[dict[str, Any]]:
    listed = harness.sourceflow("dlq", "list", service, "--json")
    assert listed.returncode == 0, listed.stderr
    rows: list[dict[str, Any]] = json.loads(listed.stdout)
    return rows


def _validation_dead_letters(harness: Harness, execution_arn: str) -> list[dict[str, Any]]:
    return [r for r in _dead_letters(harness, "validation") if r["execution_arn"] == execution_arn]


@contextmanager
def _validation_dead_lettered(
    harness: Harness, source_id: str
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A run of the source started while the validation service may not update sources (a
    broken grant: a deploy bug), once its validation message, failing every delivery, is in the
    DLQ: yields the execution and its dead letters. The grant is restored on leaving."""
    with _admin(harness) as cur:
        cur.execute("REVOKE UPDATE ON public.source FROM sourceflow_validation")
    try:
        arn = harness.start(source_id)
        rows = wait_for(
            lambda: _validation_dead_letters(harness, arn), "the message in the validation DLQ"
        )
        yield arn, rows
    finally:
        with _admin(harness) as cur:
            cur.execute("GRANT UPDATE ON public.source TO sourceflow_validation")


def test_a_duplicate_of_each_task_message_changes_nothing(harness: Harness) -> None:
    # Given a run that succeeded
    source_id = harness.new_source(
        harness.new_dataset([DAY, DAY / 2]), runtime_count=2, cursor=datetime.now(UTC) - 2 * DAY
    )
    result = harness.run(source_id)
    assert result.status == "SUCCEEDED", result
    before = _snapshot(harness, result)

    # When each of its task messages is delivered again
    sqs = harness.aws("sqs")
    messages = harness.task_messages(result.execution_arn)
    assert set(messages) == {"Validate", "Download", "UnlockAfterSuccess"}
    for queue_url, body in messages.values():
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body))
    for queue_url, _ in messages.values():
        harness.wait_until_idle(queue_url)

    # Then the source, the ledger and the raw objects are exactly as they were
    assert _snapshot(harness, result) == before
    assert len(harness.executions_of(source_id)) == 1


def test_a_worker_killed_mid_download_is_replaced_and_the_run_completes_once(
    harness: Harness,
) -> None:
    # Given a download of ten one-record pages, half a second each, under way
    source_id = harness.slow_source(pages=10, delay_ms=500, runtime_count=2).source_id
    arn = harness.start(source_id)
    first = harness.wait_until_downloading(arn, records=2)
    assert first["download_attempt"]

    # When every download worker is killed mid-download, and new ones start
    harness.stack.kill_workers("download")
    harness.stack.start_workers("download")
    result = harness.finish(arn, source_id)

    # Then the message's next delivery took over and the run completed once
    assert result.status == "SUCCEEDED", result
    assert result.run["download_attempt"] != first["download_attempt"]
    assert result.run["records"] == 10
    manifest, _ = harness.raw_output(result)
    assert manifest["records"] == 10
    assert result.source["runtime_count"] == 3  # type: ignore[index]
    assert result.source["locked_by"] is None  # type: ignore[index]


def test_the_database_unavailable_to_unlocking_is_retried_then_the_run_completes(
    harness: Harness,
) -> None:
    # Given a run whose download takes a couple of seconds
    source_id = harness.slow_source(pages=4, delay_ms=500, runtime_count=2).source_id
    logs = sorted(Path(harness.stack.options.state_dir, "logs").glob("unlocking-*.log"))
    seen = sum(path.read_text().count("not permitted to log in") for path in logs)
    arn = harness.start(source_id)
    admin_url = harness.stack.env["DATABASE_URL"]

    # When the database refuses the unlocking service while the run reaches Unlock
    cut_off(admin_url, "unlocking")
    try:
        wait_for(
            lambda: sum(p.read_text().count("not permitted to log in") for p in logs) > seen,
            "unlocking to meet the outage",
        )
    finally:
        restore(admin_url, "unlocking")
    result = harness.finish(arn, source_id)

    # Then unlocking retried after the outage and the run completed: cursor moved, lock gone
    assert result.status == "SUCCEEDED", result
    assert result.run["status"] == "succeeded"
    assert result.source["last_modified_date"] == result.run["cursor_after"]  # type: ignore[index]
    assert result.source["locked_by"] is None  # type: ignore[index]
    harness.raw_output(result)  # asserts the manifest matches the objects


def test_a_poison_message_goes_to_the_dlq_and_completes_after_the_fix_and_replay(
    harness: Harness,
) -> None:
    # Given a validation service that cannot update sources (a broken grant: a deploy bug)
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=2)
    # When a run starts, its validation message fails every delivery and is dead-lettered
    with _validation_dead_lettered(harness, source_id) as (arn, rows):
        # Then `dlq list` says where it came from and why it is there
        [row] = rows
        assert (row["queue"], row["source_id"], row["schema"]) == (
            "validation",
            source_id,
            "validation-request",
        )
        assert "permission denied" in row["error"]
        assert row["receive_count"] >= harness.stack.options.timeouts.max_receive_count - 1

    # When the fix is in and the DLQ is replayed
    replayed = harness.sourceflow("dlq", "replay", "validation", "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert {(r["execution_arn"], r["action"]) for r in json.loads(replayed.stdout)} >= {
        (arn, "replayed")
    }

    # Then the run completes
    result = harness.finish(arn, source_id)
    assert result.status == "SUCCEEDED", result
    assert result.source["runtime_count"] == 3  # type: ignore[index]
    assert not _validation_dead_letters(harness, arn)


def test_a_dead_letter_whose_task_is_over_is_parked_not_replayed(harness: Harness) -> None:
    # Given a dead-lettered validation message whose task has since ended (an operator failed
    # it; a timeout would do the same, only later)
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=2)
    with _validation_dead_lettered(harness, source_id) as (arn, _):
        pass  # the grant is back once the message is in the DLQ
    _, body = harness.task_messages(arn)["Validate"]
    harness.aws("stepfunctions").send_task_failure(
        taskToken=body["task_token"], error="OperatorGaveUp", cause="poison message"
    )
    assert harness.finish(arn, source_id).status == "FAILED"

    # When the DLQ is replayed (a dry run first changes nothing)
    dry = json.loads(
        harness.sourceflow("dlq", "replay", "validation", "--dry-run", "--json").stdout
    )
    assert [r["action"] for r in dry if r["execution_arn"] == arn] == ["would park"]
    replayed = json.loads(harness.sourceflow("dlq", "replay", "validation", "--json").stdout)

    # Then it is parked with the reason, kept, and not sent back to the work queue
    [row] = [r for r in replayed if r["execution_arn"] == arn]
    assert row["action"] == "parked"
    assert "has ended" in row["reason"] or "task is over" in row["reason"]
    with harness.db.transaction() as cur:
        cur.execute(
            "SELECT reason, body FROM public.parked_message WHERE body LIKE %s", (f"%{arn}%",)
        )
        [parked] = cur.fetchall()
    assert json.loads(parked["body"])["execution_arn"] == arn
    # The run ended in its failure path; validation never ran, so the source was not counted
    run = harness.run_row(arn)
    assert run is not None
    assert (run["status"], run["failed_step"], run["error"]) == (
        "failed",
        "Validate",
        "OperatorGaveUp",
    )
    assert harness.run_source_row(source_id)["runtime_count"] == 2
    assert not _validation_dead_letters(harness, arn)


def test_twenty_executions_at_once_for_one_source_run_exactly_one(harness: Harness) -> None:
    # Given a source whose download takes a few seconds
    source_id = harness.slow_source(pages=5, delay_ms=600, runtime_count=2).source_id

    # When twenty executions start at once
    arns: list[str] = []
    starters = [
        threading.Thread(target=lambda: arns.append(harness.start(source_id))) for _ in range(20)
    ]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join()
    results = [harness.finish(arn, source_id) for arn in arns]

    # Then exactly one ran; the other nineteen were skipped; the source ends unlocked
    statuses = sorted(result.run["status"] for result in results)
    assert statuses == ["skipped"] * 19 + ["succeeded"]
    assert all(r.status == "SUCCEEDED" for r in results)
    assert {r.run["error"] for r in results if r.run["status"] == "skipped"} == {"SourceLocked"}
    source = results[-1].source
    assert source is not None
    assert (source["locked_by"], source["runtime_count"]) == (None, 3)


def test_a_dead_owners_lock_is_taken_over_and_its_late_unlock_refused(harness: Harness) -> None:
    # Given a source still locked by an execution that died (its lease has expired)
    source_id = harness.new_source(
        harness.new_dataset([DAY]), runtime_count=2, cursor=datetime.now(UTC) - 2 * DAY
    )
    dead = f"arn:aws:states:us-east-1:123456789012:execution:sourceflow-local-run:{source_id}-dead"
    now = datetime.now(UTC)
    harness.set_lock(source_id, dead, now - timedelta(hours=2), now - timedelta(hours=1))

    # When a new run starts, Then it takes the lock over and completes
    result = harness.run(source_id)
    assert result.status == "SUCCEEDED", result
    assert result.run["status"] == "succeeded"

    # And when a third execution holds the lock and the dead owner's late unlocks arrive
    live = f"arn:aws:states:us-east-1:123456789012:execution:sourceflow-local-run:{source_id}-live"
    now = datetime.now(UTC)
    harness.set_lock(source_id, live, now, now + timedelta(minutes=10))
    sqs, queue_url = harness.aws("sqs"), harness.stack.env["UNLOCKING_QUEUE_URL"]
    for outcome in (
        {"outcome": "succeeded"},
        {"outcome": "failed", "failed_step": "Download", "failure": {"Error": "States.Timeout"}},
    ):
        late = contracts.message(
            "unlocking-request",
            correlation_id=f"{source_id}-dead",
            task_token="an-expired-token",
            execution_arn=dead,
            execution_name=f"{source_id}-dead",
            source_id=source_id,
            **outcome,
        )
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(late))
    harness.wait_until_idle(queue_url)

    # Then the fence refused both: the live lock stands and the cursor did not move
    after = harness.run_source_row(source_id)
    assert after["locked_by"] == live
    assert after["last_modified_date"] == result.source["last_modified_date"]  # type: ignore[index]


def test_malformed_messages_fail_alone_and_land_in_the_dlq_with_their_error(
    harness: Harness,
) -> None:
    # Given three malformed messages on the unlocking queue, beside a normal run
    sqs, queue_url = harness.aws("sqs"), harness.stack.env["UNLOCKING_QUEUE_URL"]
    good = contracts.message(
        "unlocking-request",
        correlation_id="x",
        task_token="t",
        execution_arn="arn:aws:states:us-east-1:123456789012:execution:sourceflow-local-run:x",
        execution_name="x",
        source_id="x",
        outcome="succeeded",
    )
    bodies = {
        "not-json": "{this is not json",
        "wrong-schema": json.dumps({**good, "schema": "download-request"}),
        "unknown-version": json.dumps({**good, "version": 99}),
    }
    sent = {
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)["MessageId"]: name
        for name, body in bodies.items()
    }
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=2)
    try:
        # When they are delivered, Then the run beside them completes
        assert harness.run(source_id).status == "SUCCEEDED"

        # And each ends in the DLQ with the contract error that sent it there
        def listed() -> dict[str, Any]:
            rows = {r["message_id"]: r for r in _dead_letters(harness, "unlocking")}
            return rows if set(sent) <= set(rows) else {}

        rows = wait_for(listed, "the malformed messages in the unlocking DLQ")
        errors = {sent[message_id]: rows[message_id]["error"] for message_id in sent}
        assert "not JSON" in errors["not-json"]
        assert "download-request" in errors["wrong-schema"]
        assert "99" in errors["unknown-version"]
    finally:
        _drain_dlq(harness, "unlocking")


def test_a_failed_run_alerts_people_with_flow_step_error_and_cause(harness: Harness) -> None:
    # Given a Re-specs run whose query fails in PostgreSQL
    source_id = harness.new_source(
        harness.new_dataset([DAY]), runtime_count=2, cursor=datetime.now(UTC) - 2 * DAY
    )
    harness.set_params(
        source_id,
        {
            "type": "Re-specs",
            "sql": "UPDATE public.listing_attributes SET no_such_column = 1"
            f" WHERE source_id = '{source_id}'",
        },
    )
    result = harness.run(source_id)
    assert result.status == "FAILED"

    # Then the Run Failed event names the flow, the step, the error and the cause
    event = harness.outcome_events({result.execution_arn})[result.execution_arn]
    detail = event["detail"]
    contracts.validate(detail, "run-failed")
    assert (detail["flow_type"], detail["failed_step"]) == ("respecs", "Unlock")
    assert detail["failure"]["Error"] == "RespecsQueryFailed"
    assert "no_such_column" in detail["cause"]

    # And the alerts topic carried one readable line to its subscribers
    line = wait_for(lambda: harness.alerts_about(source_id), "the alert")[0]
    assert "RespecsQueryFailed" in line and "Unlock" in line and "no_such_column" in line
