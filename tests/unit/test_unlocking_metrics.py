"""services.unlocking.metrics: one metrics line per ended run, by flow and source type."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.unlocking.metrics import RunEnded, publish_run_metrics

STARTED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def ended_run(**changes: Any) -> dict[str, Any]:
    return {
        "status": "succeeded",
        "flow_type": "normal",
        "failed_step": None,
        "records": 1200,
        "bytes": 34_567,
        "started_at": STARTED,
        "finished_at": STARTED + timedelta(seconds=42.5),
        "late_records": 7,
        "duplicates_skipped": 300,
        "future_records": 1,
        **changes,
    }


@pytest.fixture
def metrics_lines(metrics_on: None, capsys: pytest.CaptureFixture[str]) -> Any:
    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    return lines


def test_a_succeeded_run_reports_its_records_bytes_and_duration(metrics_lines: Any) -> None:
    publish_run_metrics(RunEnded.of(ended_run(), "http_api"))

    [line] = metrics_lines()
    assert (line["flow_type"], line["source_type"]) == ("normal", "http_api")
    assert line["RunsSucceeded"] == [1.0]
    assert (line["RunRecords"], line["RunBytes"], line["RunDuration"]) == (
        [1200.0],
        [34567.0],
        [42.5],
    )
    assert (line["LateRecords"], line["FutureRecords"]) == ([7.0], [1.0])
    [definition] = line["_aws"]["CloudWatchMetrics"]
    assert set(definition["Dimensions"][0]) == {"flow_type", "source_type", "service"}
    assert "RunsFailed" not in line


def test_a_failed_run_counts_as_a_failure_of_its_flow_and_names_the_step(
    metrics_lines: Any,
) -> None:
    publish_run_metrics(
        RunEnded.of(ended_run(status="failed", failed_step="Download", records=None), "http_api")
    )

    [line] = metrics_lines()
    assert line["RunsFailed"] == [1.0] and line["failed_step"] == "Download"
    assert "RunRecords" not in line and "RunsSucceeded" not in line


def test_a_run_that_failed_before_a_flow_was_decided_is_counted_as_unknown(
    metrics_lines: Any,
) -> None:
    publish_run_metrics(RunEnded.of(ended_run(status="failed", flow_type=None), None))

    [line] = metrics_lines()
    assert (line["flow_type"], line["source_type"]) == ("unknown", "unknown")
