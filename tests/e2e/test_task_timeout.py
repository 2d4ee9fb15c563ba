"""A download whose task has timed out stops writing: when its next heartbeat is answered that
the task is over, the delivery stops at once, writes nothing more, and nothing it wrote is taken
up by a later run; the next run is clean."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.e2e.harness import WAIT_SECONDS, Harness

DAY = timedelta(days=1)
# What a task service logs when it is done with a delivery, however it ended.
_ENDINGS = {
    "message consumed without effect",
    "permanent error",
    "task done",
    "transient error on the last delivery",
    "delivery failed; SQS will hand it out again",
}
_TASK_OVER = re.compile(r"the task is over \((TaskTimedOut|InvalidToken|TaskDoesNotExist)\)")


def _stopped_as_required(line: dict[str, Any]) -> bool:
    """A delivery's end that is a stop: its task is over, or the source's lock is gone."""
    if line.get("message") == "message consumed without effect":
        return bool(_TASK_OVER.search(line.get("error", "")))
    return line.get("message") == "permanent error" and line.get("error_name") == "LockLost"


def _stood_down(line: dict[str, Any]) -> bool:
    """A delivery's end that is a stop because a later delivery took its claim over."""
    return line.get("message") == "message consumed without effect" and (
        "another delivery took over" in line.get("error", "")
    )


def test_a_download_whose_task_timed_out_stops_and_writes_nothing(harness: Harness) -> None:
    # Given a run downloading twelve one-record pages, a second each (the vendor must hang
    # before the download is over, however loaded the machine), from a cursor a day back
    now = datetime.now(UTC)
    slow = harness.slow_source(pages=12, delay_ms=1000, runtime_count=3, now=now)
    source_id, dataset, cursor = slow.source_id, slow.dataset, slow.cursor
    arn = harness.start(source_id)
    prefix = f"{source_id}/{arn.rsplit(':', 1)[1]}/"
    harness.wait_until_downloading(arn, records=2)

    # When the vendor hangs mid-download: longer than every redelivery could keep the task
    # alive and than its HeartbeatSeconds after that (with room for a loaded machine's slower
    # redeliveries), shorter than the connector's read timeout (60 s)
    timeouts = harness.stack.options.timeouts
    hang_ms = 55_000
    assert hang_ms > 1000 * (
        timeouts.max_receive_count * timeouts.download_claim_seconds
        + timeouts.download_heartbeat_seconds
    )
    harness.vendor.fault(dataset, page_delay_ms=hang_ms)
    result = harness.finish(arn, source_id)

    # Then the task timed out: the run failed in Download, the source is unlocked, the cursor
    # is where it was
    assert (result.status, result.error) == ("FAILED", "StepFailed"), result
    assert (result.run["status"], result.run["error"], result.run["failed_step"]) == (
        "failed",
        "States.Timeout",
        "Download",
    )
    assert result.source is not None
    assert (result.source["locked_by"], result.source["last_modified_date"]) == (None, cursor)
    at_timeout = result.run

    # When the hung page is released and the download, still running, reaches its next heartbeat
    logs = _DownloadLogs(harness.stack.options.state_dir / "logs")
    cleared_at = _db_now(harness)
    harness.vendor.clear_faults()
    late = _watch_late_deliveries(harness, logs, at_timeout, timeout=WAIT_SECONDS)

    # Then it wrote nothing more: no part, no manifest under the run's prefix
    written = sorted(harness.raw_objects(prefix))
    assert not written, f"the timed-out download kept writing {written}; {late}"

    # And every delivery of the run ended: the download stopped because the task is over (or
    # the lock is gone) and gave its claim back, renewing it no more; any earlier delivery whose
    # claim it had taken over stopped too
    assert late.ended, (
        f"the deliveries had not all ended {WAIT_SECONDS:.0f} s after the vendor answered: {late}"
    )
    assert not late.renewals, f"the timed-out download renewed its claim: {late}"
    assert late.claimed_until is not None and cleared_at <= late.claimed_until, f"{late}"
    assert any(_stopped_as_required(stop) for stop in late.stops), f"{late}"
    assert all(_stopped_as_required(stop) or _stood_down(stop) for stop in late.stops), f"{late}"

    # And the ledger row is as the timeout left it: failed, no result recorded, no progress
    # reported after the timeout
    after = harness.run_row(arn)
    assert after is not None
    for column in (
        "status",
        "error",
        "failed_step",
        "records",
        "objects",
        "manifest_key",
        "progress_records",
        "progress_bytes",
    ):
        assert after[column] == at_timeout[column], column

    # When the source runs again
    second = harness.run(source_id)

    # Then it loads all twelve records from the unchanged cursor, from its own objects only
    assert second.status == "SUCCEEDED", second
    assert (second.run["status"], second.run["records"]) == ("succeeded", 12)
    second_prefix = f"{source_id}/{second.execution_arn.rsplit(':', 1)[1]}/"
    manifest, records = harness.raw_output(second)
    assert manifest["objects"]
    assert all(entry["key"].startswith(second_prefix) for entry in manifest["objects"])
    assert sorted(record["id"] for record in records) == [f"{dataset}-{i:05d}" for i in range(12)]

    # And the cursor moved to the newest record, the source is unlocked, and the timed-out run
    # is still failed with nothing under its prefix
    assert second.source is not None
    assert second.source["locked_by"] is None
    assert second.source["last_modified_date"] == (now - DAY / 10).replace(microsecond=0)
    assert harness.raw_objects(prefix) == {}
    assert harness.run_row(arn)["status"] == "failed"  # type: ignore[index]


class _DownloadLogs:
    """The download workers' JSON log lines written after this object was made."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._offsets = {path: path.stat().st_size for path in directory.glob("download-*.log")}

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self._directory.glob("download-*.log")):
            with path.open("rb") as log:
                log.seek(self._offsets.get(path, 0))
                text = log.read().decode(errors="replace")
            for line in text[: text.rfind("\n") + 1].splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # the worker's own plain-text lines
                if isinstance(entry, dict):
                    found.append(entry)
        return found


@dataclass
class _LateDeliveries:
    """What the deliveries of a timed-out run did once the vendor answered again."""

    stops: list[dict[str, Any]]  # the log lines of their ends
    claimed_until: datetime | None  # the download claim's expiry, last seen
    renewals: list[datetime]  # expiries seen still ahead: the claim renewed after the timeout
    ended: bool

    def __str__(self) -> str:
        stops = [
            (line.get("receive_count"), line.get("message"), line.get("error"))
            for line in self.stops
        ]
        return (
            f"deliveries ended {stops}, claim until {self.claimed_until}, renewed to "
            f"{self.renewals}, all ended: {self.ended}"
        )


def _watch_late_deliveries(
    harness: Harness, logs: _DownloadLogs, at_timeout: dict[str, Any], timeout: float
) -> _LateDeliveries:
    """Watch until the deliveries of the run have all ended: the download's claim changed and
    is not live (given back, or lapsed after a download that went on stopped renewing it),
    deliveries 1..n each logged its end, and the download queue holds no message (none
    waiting, none in flight). Gives up after `timeout` with what it saw."""
    execution_arn = at_timeout["execution_arn"]
    sqs, queue_url = harness.aws("sqs"), harness.stack.env["DOWNLOAD_QUEUE_URL"]
    renewals: list[datetime] = []
    deadline = time.monotonic() + timeout
    while True:
        with harness.db.transaction() as cur:
            cur.execute(
                "SELECT download_claimed_until, now() AS now FROM public.source_run"
                " WHERE execution_arn = %s",
                (execution_arn,),
            )
            row = cur.fetchone()
        claimed_until = row["download_claimed_until"]
        changed = claimed_until != at_timeout["download_claimed_until"]
        if changed and claimed_until > row["now"] and claimed_until not in renewals:
            renewals.append(claimed_until)
        stops = [
            line
            for line in logs.lines()
            if line.get("execution_arn") == execution_arn and line.get("message") in _ENDINGS
        ]
        received = {line.get("receive_count") for line in stops}
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        ended = (
            changed
            and claimed_until <= row["now"]
            and bool(stops)
            and received == set(range(1, len(received) + 1))
            and all(int(value) == 0 for value in attributes.values())
        )
        if ended or time.monotonic() >= deadline:
            return _LateDeliveries(stops, claimed_until, renewals, ended)
        time.sleep(0.2)


def _db_now(harness: Harness) -> datetime:
    with harness.db.transaction() as cur:
        cur.execute("SELECT now() AS now")
        now: datetime = cur.fetchone()["now"]
    return now
