"""The metrics of a run that unlocking ended: whether it succeeded, what it loaded and how long
it took, by flow and source type. Unlocking is where all of it is known, once per run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from shared.runtime.observability import dimensioned_metrics
from shared.store.runs import RunStatus


@dataclass(frozen=True)
class RunEnded:
    status: str
    flow_type: str | None
    source_type: str | None
    failed_step: str | None
    records: int | None
    bytes: int | None
    duration_seconds: float
    late_records: int | None = None
    duplicates_skipped: int | None = None
    future_records: int | None = None

    @classmethod
    def of(cls, run: Mapping[str, Any], source_type: str | None) -> RunEnded:
        """From the run's ledger row as it ended."""
        return cls(
            status=run["status"],
            flow_type=run["flow_type"],
            source_type=source_type,
            failed_step=run["failed_step"],
            records=run["records"],
            bytes=run["bytes"],
            duration_seconds=(run["finished_at"] - run["started_at"]).total_seconds(),
            late_records=run["late_records"],
            duplicates_skipped=run["duplicates_skipped"],
            future_records=run["future_records"],
        )


def publish_run_metrics(run: RunEnded) -> None:
    with dimensioned_metrics(
        flow_type=run.flow_type or "unknown", source_type=run.source_type or "unknown"
    ) as line:
        line.add_metric(name="RunDuration", unit=MetricUnit.Seconds, value=run.duration_seconds)
        if run.status == RunStatus.SUCCEEDED:
            line.add_metric(name="RunsSucceeded", unit=MetricUnit.Count, value=1)
            line.add_metric(name="RunRecords", unit=MetricUnit.Count, value=run.records or 0)
            line.add_metric(name="RunBytes", unit=MetricUnit.Bytes, value=run.bytes or 0)
            # Late records caught say how much the allowance is needed; future-dated ones, that
            # a source's clock or data is wrong (alarm on it).
            line.add_metric(name="LateRecords", unit=MetricUnit.Count, value=run.late_records or 0)
            line.add_metric(
                name="FutureRecords", unit=MetricUnit.Count, value=run.future_records or 0
            )
        else:
            line.add_metric(name="RunsFailed", unit=MetricUnit.Count, value=1)
            # Searchable in the log line, without multiplying the metric by step.
            line.add_metadata(key="failed_step", value=run.failed_step)
