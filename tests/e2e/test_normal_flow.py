"""The Normal flow and the first-run rule, end to end through the real state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from local.stack import LocalStack
from shared.rules.flows import DEFAULT_LATENESS_ALLOWANCE, overlap
from shared.runtime import contracts
from tests.builders import listing
from tests.e2e.harness import Events, Runs, Sources, Vendor

DAY = timedelta(days=1)


def test_first_run_is_backdated_full_load_and_lands_in_the_raw_bucket(
    sources: Sources, runs: Runs
) -> None:
    # Given a never-run source whose vendor has 3 records inside 10 days and 2 older ones
    dataset = sources.new_dataset([1 * DAY, 3 * DAY, 9 * DAY, 11 * DAY, 400 * DAY])
    source_id = sources.new_source(dataset, backdate_days=10)

    # When it runs
    result = runs.run(source_id)

    # Then the first-run rule made it a Full Load over the last 10 days
    assert result.status == "SUCCEEDED", result
    run, source = result.run, result.source
    assert run["status"] == "succeeded"
    assert run["flow_type"] == "full_load"
    assert run["window_end"] - run["window_start"] == timedelta(days=10)
    assert run["records"] == 3
    assert source is not None
    assert source["batch_execution_params"] == {"type": "Full Load"}
    assert source["runtime_count"] == 1
    assert source["locked_by"] is None
    newest = datetime.now(UTC) - DAY
    assert abs(source["last_modified_date"] - newest) < timedelta(minutes=1)
    history = sources.flow_history(source_id)
    assert [(h["from_params"], h["to_params"]) for h in history] == [(None, {"type": "Full Load"})]

    # And the raw bucket holds gzip JSON lines with the vendor's field names, and a manifest
    # whose counts and hashes match the objects (raw_output asserts they do)
    manifest, records = runs.raw_output(result)
    [entry] = manifest["objects"]
    assert manifest["records"] == entry["records"] == len(records) == 3
    assert all({"id", "last_modified", "price"} <= set(record) for record in records)


def test_a_second_run_loads_only_what_changed(sources: Sources, runs: Runs, vendor: Vendor) -> None:
    # Given a Normal source with a cursor two days back and 4 records modified since
    now = datetime.now(UTC)
    dataset = sources.new_dataset([5 * DAY, 3 * DAY, DAY, DAY / 2, DAY / 4, DAY / 8], now=now)
    cursor = now - 2 * DAY
    source_id = sources.new_source(
        dataset, cursor=cursor, runtime_count=3, params={"flow_type": "Normal"}
    )
    first = runs.run(source_id)
    assert first.status == "SUCCEEDED", first
    assert first.run["flow_type"] == "normal"
    assert first.run["window_start"] == cursor - overlap(DEFAULT_LATENESS_ALLOWANCE)
    assert not first.run["window_start_inclusive"]
    assert first.run["records"] == 4

    # When the vendor changes two old records and adds one, and the source runs again
    vendor.put(
        dataset,
        [
            {"id": f"{dataset}-00000", "price": 1},
            {"id": f"{dataset}-00003", "price": 2},
            listing(dataset, 99, datetime.now(UTC)),
        ],
    )
    second = runs.run(source_id)

    # Then exactly those three are loaded and the cursor follows the newest of them
    assert second.status == "SUCCEEDED", second
    cursor_after_first = first.source["last_modified_date"]  # type: ignore[index]
    assert second.run["window_start"] == cursor_after_first - overlap(DEFAULT_LATENESS_ALLOWANCE)
    assert second.run["records"] == 3
    assert second.run["cursor_before"] == first.source["last_modified_date"]  # type: ignore[index]
    assert second.source["last_modified_date"] == second.run["cursor_after"]  # type: ignore[index]
    assert second.run["cursor_after"] > second.run["cursor_before"]
    assert second.source["runtime_count"] == 5  # type: ignore[index]
    assert second.source["batch_execution_params"] == {"flow_type": "Normal"}  # type: ignore[index]


def test_a_run_with_nothing_new_keeps_the_cursor(sources: Sources, runs: Runs) -> None:
    now = datetime.now(UTC)
    dataset = sources.new_dataset([3 * DAY], now=now)
    cursor = now - DAY
    source_id = sources.new_source(dataset, cursor=cursor, runtime_count=2)
    result = runs.run(source_id)
    assert result.status == "SUCCEEDED", result
    assert result.run["records"] == 0
    assert result.source["last_modified_date"] == cursor  # type: ignore[index]


def test_run_outcome_events_match_their_contracts(
    sources: Sources, runs: Runs, events: Events
) -> None:
    dataset = sources.new_dataset([DAY])
    ok = runs.run(sources.new_source(dataset, runtime_count=1, cursor=None))
    failed = runs.run("no-such-source")
    outcomes = events.outcome_events({ok.execution_arn, failed.execution_arn})

    succeeded = outcomes[ok.execution_arn]
    assert succeeded["detail-type"] == "Run Succeeded"
    contracts.validate(succeeded["detail"], "run-succeeded")
    assert succeeded["detail"]["records"] == 1
    failure = outcomes[failed.execution_arn]
    assert failure["detail-type"] == "Run Failed"
    contracts.validate(failure["detail"], "run-failed")
    assert failure["detail"]["failed_step"] == "Validate"
    assert failure["detail"]["failure"]["Error"] == "SourceNotFound"


def test_heartbeats_keep_a_download_alive_past_the_heartbeat_timeout(
    sources: Sources, runs: Runs, stack: LocalStack
) -> None:
    # Given a download of one-record pages that takes longer than the task's HeartbeatSeconds
    # in all, each page well within a heartbeat interval
    timeouts = stack.options.timeouts
    heartbeat_seconds = timeouts.download_heartbeat_seconds
    pages = int(heartbeat_seconds / timeouts.heartbeat_interval_seconds) + 4
    delay_ms = int(timeouts.heartbeat_interval_seconds * 1000)
    source_id = sources.slow_source(pages, delay_ms, runtime_count=2).source_id

    # When it runs
    result = runs.run(source_id)

    # Then it succeeds, because the download service heartbeats while it works
    assert result.status == "SUCCEEDED", result
    took = (result.run["finished_at"] - result.run["started_at"]).total_seconds()
    assert took > heartbeat_seconds
    assert result.run["records"] == pages
