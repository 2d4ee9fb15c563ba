"""Builders of the messages and records tests feed sourceflow (STYLE.md habit 10: shared
factories instead of pasted JSON); each gives a valid default and takes the changes a test
cares about. Fakes of the ports live in tests/fakes/."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from shared.timefmt import isoformat

# -- task requests --------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / (
    "contracts/examples/validation-request.v1/valid/acme-listings.json"
)
QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:sourceflow-validation"


def request_body(**overrides: Any) -> dict[str, Any]:
    """A validation-request (the contract's example) with a token of its own."""
    body: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    body["task_token"] = f"token-{uuid.uuid4()}"
    body.update(overrides)
    return body


def sqs_record(
    body: dict[str, Any] | str | None = None,
    *,
    receive_count: int = 1,
    message_id: str | None = None,
    receipt_handle: str | None = None,
    queue_arn: str = QUEUE_ARN,
) -> SQSRecord:
    """An SQS record as Lambda hands it over, carrying `body` (default: a validation-request);
    its message id and receipt handle are new unless given."""
    text = body if isinstance(body, str) else json.dumps(body or request_body())
    return SQSRecord(
        {
            "messageId": message_id or str(uuid.uuid4()),
            "receiptHandle": receipt_handle or f"receipt-{uuid.uuid4()}",
            "body": text,
            "attributes": {
                "ApproximateReceiveCount": str(receive_count),
                "SentTimestamp": "1795372917126",
                "SenderId": "AIDAEXAMPLE",
                "ApproximateFirstReceiveTimestamp": "1795372917200",
            },
            "messageAttributes": {},
            "md5OfBody": "0" * 32,
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": "eu-west-1",
        }
    )


# -- one execution's task requests, as the state machine sends them -------------------------


@dataclass(frozen=True)
class Execution:
    """One state-machine execution for a source, and the task requests it would send."""

    source_id: str
    name: str

    @property
    def arn(self) -> str:
        return f"arn:aws:states:eu-west-1:123456789012:execution:sourceflow-run:{self.name}"

    def _envelope(self, schema: str) -> dict[str, Any]:
        return {
            "schema": schema,
            "version": 1,
            "correlation_id": self.name,
            "produced_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "task_token": f"token-{schema}-{self.name}",
            "execution_arn": self.arn,
            "execution_name": self.name,
            "source_id": self.source_id,
        }

    def validation(self) -> dict[str, Any]:
        return self._envelope("validation-request")

    def download(self, plan: Mapping[str, Any]) -> dict[str, Any]:
        return {**self._envelope("download-request"), "plan": dict(plan)}

    def unlock_succeeded(self) -> dict[str, Any]:
        return {**self._envelope("unlocking-request"), "outcome": "succeeded"}

    def unlock_failed(
        self, *, step: str = "Download", error: str = "SourceUnavailable", cause: str | None = None
    ) -> dict[str, Any]:
        failure = {"Error": error}
        if cause is not None:
            failure["Cause"] = cause
        return {
            **self._envelope("unlocking-request"),
            "outcome": "failed",
            "failed_step": step,
            "failure": failure,
        }


# -- records at a source ---------------------------------------------------------------------


def record(index: int, last_modified: datetime, **fields: Any) -> dict[str, Any]:
    """A record a fake connector yields."""
    return {
        "id": f"rec-{index:05d}",
        "last_modified": last_modified.isoformat().replace("+00:00", "Z"),
        **fields,
    }


def records_modified(*moments: datetime) -> list[dict[str, Any]]:
    return [record(index, moment) for index, moment in enumerate(moments)]


def listing(dataset: str, index: int, modified: datetime, **fields: Any) -> dict[str, Any]:
    """A listing as the demo vendor stores it (whole-second stamp)."""
    return {
        "id": f"{dataset}-{index:05d}",
        "last_modified": isoformat(modified.replace(microsecond=0)),
        "price": 100_000 + index,
        **fields,
    }


def sold_listing(dataset: str, index: int, sold: datetime) -> dict[str, Any]:
    """A listing sold at `sold`, last modified a day later."""
    return listing(
        dataset, index, sold + timedelta(days=1), sold_date=isoformat(sold), status="sold"
    )


def years_ago(years: int) -> timedelta:
    return timedelta(days=365 * years)


# -- what a source row keeps of its Normal timeline ----------------------------------------------

TIMELINE_COLUMNS = (
    "last_modified_date",
    "landed_since",
    "batch_execution_params",
    "params_changed_at",
    "runtime_count",
    "locked_by",
)


def timeline(source: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a source row belongs to its Normal timeline (cursor, landed versions' mark,
    params, run count) and its lock: what a backfill leaves as it is."""
    return tuple(source[column] for column in TIMELINE_COLUMNS)
