"""shared.runtime.observability: metrics flushed per invocation or per record, and silent
when off."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.runtime.observability import count_deliveries, dimensioned_metrics, log_metrics


def emitted(out: str) -> list[dict[str, Any]]:
    """The CloudWatch embedded-metric-format lines printed to stdout."""
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" in line]


def test_each_block_of_dimensioned_metrics_is_its_own_metrics_line(
    metrics_on: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two records of one batch with different flows
    for flow, records in (("Normal", 10), ("Sold", 3)):
        with dimensioned_metrics(flow_type=flow, source_type="http_api") as metrics:
            metrics.add_metric(name="RunRecords", unit="Count", value=records)

    # Then each record's metric carries its own dimensions
    lines = emitted(capsys.readouterr().out)
    assert [(line["flow_type"], line["RunRecords"]) for line in lines] == [
        ("Normal", [10.0]),
        ("Sold", [3.0]),
    ]
    assert lines[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "sourceflow"
    assert set(lines[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) == {
        "flow_type",
        "source_type",
        "service",
    }


def test_an_invocation_flushes_its_metrics_once(
    metrics_on: None, capsys: pytest.CaptureFixture[str]
) -> None:
    @log_metrics
    def handler(event: dict[str, Any], context: object) -> str:
        count_deliveries(received=3, failed=1)
        return "done"

    assert handler({}, object()) == "done"

    [line] = emitted(capsys.readouterr().out)
    assert (line["Deliveries"], line["DeliveriesFailed"]) == ([3.0], [1.0])


def test_with_metrics_disabled_nothing_is_printed_however_long_the_worker_lives(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given metrics switched off, as on the embedded stack
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")

    @log_metrics
    def handler(event: dict[str, Any], context: object) -> None:
        with dimensioned_metrics(flow_type="Normal", source_type="http_api") as metrics:
            metrics.add_metric(name="RunsSucceeded", unit="Count", value=1)
        count_deliveries(received=1, failed=0)

    # When one warm worker handles more invocations than powertools buffers
    for _ in range(150):
        handler({}, object())

    # Then no metrics line ever reaches its log
    assert emitted(capsys.readouterr().out) == []
