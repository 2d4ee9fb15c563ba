"""Bad input and failing steps: a named error in the ledger, the source unlocked, nothing else
changed."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

from tests.e2e.harness import Harness, RunResult

DAY = timedelta(days=1)


def assert_failed_cleanly(result: RunResult, error: str, step: str) -> None:
    assert result.status == "FAILED", result
    assert result.error == error
    assert result.run["status"] == "failed"
    assert result.run["error"] == error
    assert result.run["failed_step"] == step
    assert result.run["finished_at"] is not None
    if result.source is not None:
        assert result.source["locked_by"] is None
        assert result.source["lock_expires_at"] is None


def test_a_download_that_fails_leaves_the_cursor_and_releases_the_lock(harness: Harness) -> None:
    # Given a Normal source with a cursor, whose vendor fails after the first page
    now = datetime.now(UTC)
    dataset = harness.new_dataset([DAY / 10] * 30, now=now)
    cursor = now - DAY
    source_id = harness.new_source(dataset, cursor=cursor, runtime_count=4)
    harness.vendor.fault(dataset, fail_status=500, after_records=0)

    # When it runs: every delivery meets a 5xx, SQS redelivers with backoff, the last
    # delivery reports the named error
    result = harness.run(source_id)

    # Then the run failed in Download, the cursor did not move, the lock is released
    assert_failed_cleanly(result, "SourceUnavailable", "Download")
    assert "500" in result.run["error_detail"]
    assert "gave up after 4 deliveries" in result.run["error_detail"]
    assert result.source["last_modified_date"] == cursor  # type: ignore[index]
    assert result.source["runtime_count"] == 5  # type: ignore[index]


def test_a_permanent_vendor_error_fails_at_once(harness: Harness) -> None:
    dataset = harness.new_dataset([DAY])
    source_id = harness.new_source(dataset, runtime_count=2, cursor=datetime.now(UTC) - 2 * DAY)
    harness.vendor.fault(dataset, fail_status=400, after_records=0)
    result = harness.run(source_id)
    assert_failed_cleanly(result, "SourceRequestRejected", "Download")


def test_unknown_source_fails_in_validation(harness: Harness) -> None:
    result = harness.run("src-does-not-exist")
    assert_failed_cleanly(result, "SourceNotFound", "Validate")
    assert result.source is None
    assert "src-does-not-exist" in result.run["error_detail"]


def test_malformed_params_fail_without_touching_the_source(harness: Harness) -> None:
    dataset = harness.new_dataset([DAY])
    cursor = datetime.now(UTC) - 2 * DAY
    source_id = harness.new_source(
        dataset, cursor=cursor, runtime_count=2, params={"type": "Weekly"}
    )
    result = harness.run(source_id)
    assert_failed_cleanly(result, "InvalidFlowParams", "Validate")
    assert "batch_execution_params.type" in result.run["error_detail"]
    assert "'Weekly'" in result.run["error_detail"]
    assert result.source["runtime_count"] == 2  # type: ignore[index]
    assert result.source["last_modified_date"] == cursor  # type: ignore[index]
    assert result.source["batch_execution_params"] == {"type": "Weekly"}  # type: ignore[index]


def test_inactive_source_is_skipped_and_not_counted(harness: Harness) -> None:
    dataset = harness.new_dataset([DAY])
    source_id = harness.new_source(dataset, runtime_count=2, is_active=False)
    result = harness.run(source_id)
    assert result.status == "SUCCEEDED"
    assert result.output["validation"]["decision"] == "skip"  # type: ignore[index]
    assert (result.run["status"], result.run["error"]) == ("skipped", "SourceInactive")
    assert result.source["runtime_count"] == 2  # type: ignore[index]
    assert result.source["locked_by"] is None  # type: ignore[index]


def test_unreachable_vendor_fails_with_a_named_error(harness: Harness) -> None:
    # A port nothing listens on (bound, then closed).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    dataset = harness.new_dataset([DAY])
    source_id = harness.new_source(
        dataset, runtime_count=2, base_url=f"http://127.0.0.1:{dead_port}"
    )
    result = harness.run(source_id)
    assert_failed_cleanly(result, "SourceUnreachable", "Download")
    assert f"127.0.0.1:{dead_port}" in result.run["error_detail"]


def test_a_second_execution_for_a_locked_source_is_skipped(harness: Harness) -> None:
    # Given a source whose download is slow (the vendor waits 400 ms per page of 1 record)
    source_id = harness.slow_source(pages=8, delay_ms=400, runtime_count=2).source_id

    # When a first execution holds the lock and a second one starts meanwhile
    first_arn = harness.start(source_id)
    harness.wait_until_locked(source_id, first_arn)
    second = harness.run(source_id)
    first = harness.finish(first_arn, source_id)

    # Then the second is skipped without touching the lock, and the first completes
    assert second.status == "SUCCEEDED"
    assert (second.run["status"], second.run["error"]) == ("skipped", "SourceLocked")
    assert first_arn in second.run["error_detail"]
    assert first.status == "SUCCEEDED", first
    assert first.run["records"] == 8
    assert first.source["locked_by"] is None  # type: ignore[index]
    assert first.source["runtime_count"] == 3  # type: ignore[index]


def test_a_hung_vendor_times_the_download_out_and_the_source_is_unlocked(harness: Harness) -> None:
    # Given a vendor that hangs on every page for longer than the task's HeartbeatSeconds and
    # than every redelivery the queue allows (each delivery whose claim lapses is replaced by
    # the next, which starts with a heartbeat; when they all hang, nothing beats any more)
    now = datetime.now(UTC)
    dataset = harness.new_dataset([DAY / 10], now=now)
    cursor = now - DAY
    source_id = harness.new_source(dataset, cursor=cursor, runtime_count=2)
    timeouts = harness.stack.options.timeouts
    hang_seconds = (
        timeouts.max_receive_count * timeouts.download_claim_seconds
        + timeouts.download_heartbeat_seconds
    )
    harness.vendor.fault(dataset, page_delay_ms=hang_seconds * 1000)

    # When it runs
    result = harness.run(source_id)

    # Then the step timed out, the execution names it StepFailed, the ledger says why, and the
    # source is unlocked with its cursor where it was
    assert result.status == "FAILED" and result.error == "StepFailed"
    assert (result.run["status"], result.run["error"]) == ("failed", "States.Timeout")
    assert result.run["failed_step"] == "Download"
    assert result.source["locked_by"] is None  # type: ignore[index]
    assert result.source["last_modified_date"] == cursor  # type: ignore[index]
