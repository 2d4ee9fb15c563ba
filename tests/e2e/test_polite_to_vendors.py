"""Polite to vendors (README, "Polite to vendors"): a vendor's 429 with Retry-After is waited
out inside the download, heartbeating, without starting it again; a vendor's concurrency limit
(`sourceflow vendors set`) holds across all its sources and every download worker; a vendor that
asks for more than a page may wait fails the run by name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.connectors.pacing import vendor_host
from tests.e2e.harness import Harness, RunResult
from tests.e2e.harness.stack import HEARTBEAT_SECONDS

DAY = timedelta(days=1)


def a_vendor_source(harness: Harness, dataset: str, *, page_size: int) -> str:
    """A source of its own (a Normal run a day behind) reading the vendor's `dataset`: several
    such sources are sources of one vendor, as a vendor's datasets are."""
    return harness.new_source(
        harness.unique_name(),
        cursor=datetime.now(UTC) - 2 * DAY,
        runtime_count=2,
        connection={"base_url": harness.vendor.url, "dataset": dataset, "page_size": page_size},
    )


def landed_ids(harness: Harness, result: RunResult) -> list[Any]:
    _, records = harness.raw_output(result)
    return sorted(record["id"] for record in records)


def test_sources_of_one_vendor_due_at_once_never_pass_its_limit_and_each_lands_once(
    harness: Harness,
) -> None:
    # Given a vendor that serves its dataset to fewer requests at once than there are download
    # workers (429 beyond that), a page every 200 ms, and the same limit set by an operator
    limit = harness.stack.options.workers_per_service - 1
    records = 12
    dataset = harness.new_dataset([DAY / (index + 2) for index in range(records)])
    harness.vendor.fault(dataset, page_delay_ms=200)
    harness.vendor.limit(dataset, limit, retry_after_s=1)
    host = vendor_host(harness.vendor.url)
    set_limit = harness.sourceflow(
        "vendors", "set", host, "--max-concurrent", str(limit), person="alice"
    )
    assert set_limit.returncode == 0, set_limit.stderr
    assert f"alice set vendor {host} to at most {limit} download(s) at once" in set_limit.stdout
    try:
        # When four sources of the vendor run at once (every worker downloads one of them)
        sources = [a_vendor_source(harness, dataset, page_size=1) for _ in range(4)]
        arns = [harness.start(source_id) for source_id in sources]
        harness.wait_until_downloading(arns[0], records=1)
        listed = harness.sourceflow("vendors", "list", "--json")
        results = [
            harness.finish(arn, source_id) for arn, source_id in zip(arns, sources, strict=True)
        ]
    finally:
        unset = harness.sourceflow("vendors", "unset", host, person="alice")
        assert unset.returncode == 0, unset.stderr

    # Then every run succeeded and landed each of the dataset's records once
    assert [result.status for result in results] == ["SUCCEEDED"] * 4, results
    ids = landed_ids(harness, results[0])
    assert len(ids) == len(set(ids)) == records
    assert all(landed_ids(harness, result) == ids for result in results)
    # And the vendor never saw more requests at once than its limit, and refused none
    seen = harness.vendor.limits()[dataset]
    assert 1 <= seen["max_seen"] <= limit and seen["refused"] == 0, seen
    # And no download started again: the vendor served each source's records once
    assert harness.vendor.faults()[dataset]["served"] == 4 * records
    # And the operator saw the limit, and who set it
    assert listed.returncode == 0, listed.stderr
    assert f'"host": "{host}"' in listed.stdout and '"set_by": "alice"' in listed.stdout


def test_a_retry_after_longer_than_the_heartbeat_timeout_is_waited_out_in_the_same_download(
    harness: Harness,
) -> None:
    # Given a vendor that answers the third page with 429, asking to come back only after the
    # Download task's HeartbeatSeconds have passed
    records = 10
    dataset = harness.new_dataset([DAY / (index + 2) for index in range(records)])
    source_id = a_vendor_source(harness, dataset, page_size=2)
    retry_after = HEARTBEAT_SECONDS + 5
    harness.vendor.fault(
        dataset, fail_status=429, after_records=4, fail_times=1, retry_after_s=retry_after
    )

    # When it runs
    started = datetime.now(UTC)
    result = harness.run(source_id)

    # Then the download waited as asked, heartbeating, and went on where it was
    assert result.status == "SUCCEEDED", result
    assert datetime.now(UTC) - started > timedelta(seconds=retry_after)
    assert len(set(landed_ids(harness, result))) == records
    assert harness.vendor.faults()[dataset]["served"] == records  # no page read twice


def test_a_vendor_asking_for_more_than_a_page_may_wait_fails_the_run_by_name(
    harness: Harness,
) -> None:
    # Given a vendor that answers every page with 429 and "come back in an hour"
    dataset = harness.new_dataset([DAY / 2])
    source_id = a_vendor_source(harness, dataset, page_size=2)
    cursor = harness.run_source_row(source_id)["last_modified_date"]
    harness.vendor.fault(dataset, fail_status=429, retry_after_s=3600)

    # When it runs: each delivery yields at once, and the last one allowed reports it
    result = harness.run(source_id)

    # Then the run failed by name, saying what to change, and the cursor stayed
    assert result.status == "FAILED", result
    assert (result.run["failed_step"], result.run["error"]) == ("Download", "SourceThrottled")
    assert "VENDOR_MAX_WAIT_SECONDS" in result.run["error_detail"]
    assert result.source is not None
    assert result.source["last_modified_date"] == cursor
