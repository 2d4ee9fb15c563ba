"""The unit harness of shared.runtime.tasks.process_task_record: SQS records carrying a
validation-request, the work a task does, and fakes of what the function reports to."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from shared.runtime.deliveries import Delivery, QueueVisibility, RetryPolicy
from shared.runtime.tasks import process_task_record
from tests.fakes import FakeCallbacks

EXAMPLE = (
    Path(__file__).resolve().parents[2]
    / "contracts/examples/validation-request.v1/valid/acme-listings.json"
)
RETRY = RetryPolicy(max_receives=3, base_backoff_seconds=2, max_backoff_seconds=30)
QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:sourceflow-validation"


class FakeVisibility(QueueVisibility):
    def __init__(self) -> None:
        self.delays: list[tuple[str, int]] = []

    def delay(self, record: SQSRecord, seconds: int) -> None:
        self.delays.append((record.receipt_handle, seconds))


class FailureLog:
    def __init__(self) -> None:
        self.entries: list[tuple[Mapping[str, Any], str, str]] = []

    def __call__(self, message: Mapping[str, Any], error_name: str, detail: str) -> None:
        self.entries.append((message, error_name, detail))


def request_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    body["task_token"] = f"token-{uuid.uuid4()}"
    body.update(overrides)
    return body


def sqs_record(body: dict[str, Any] | str | None = None, *, receive_count: int = 1) -> SQSRecord:
    text = body if isinstance(body, str) else json.dumps(body or request_body())
    return SQSRecord(
        {
            "messageId": str(uuid.uuid4()),
            "receiptHandle": f"receipt-{uuid.uuid4()}",
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
            "eventSourceARN": QUEUE_ARN,
            "awsRegion": "eu-west-1",
        }
    )


def run_fields(message: Mapping[str, Any], _: Delivery | None = None) -> dict[str, Any]:
    return {
        "source_id": message["source_id"],
        "execution_arn": message["execution_arn"],
        "decision": "run",
        "plan": {
            "flow_type": "normal",
            "window_field": "last_modified",
            "window_start": "2026-11-21T18:40:02Z",
            "window_end": "2026-11-22T18:41:57.126486Z",
            "window_start_inclusive": False,
        },
        "runtime_count": 42,
    }


# What a task does with a message: its result fields, or None to keep the token for a person.
Work = Callable[[dict[str, Any], Delivery], Mapping[str, Any] | None]


def raising(error: Exception) -> Work:
    def work(message: dict[str, Any], delivery: Delivery) -> Mapping[str, Any]:
        raise error

    return work


class Harness:
    """process_task_record for the validation queue, reporting to fakes."""

    def __init__(self, *, callbacks: FakeCallbacks | None = None) -> None:
        self.callbacks = callbacks or FakeCallbacks()
        self.visibility = FakeVisibility()
        self.failures = FailureLog()

    def process(self, record: SQSRecord, work: Work = run_fields) -> None:
        process_task_record(
            record,
            request_contract="validation-request",
            result_contract="validation-result",
            work=work,
            callbacks=self.callbacks,
            record_failure=self.failures,
            max_receives=RETRY.max_receives,
            visibility=self.visibility,
        )


def token_of(record: SQSRecord) -> str:
    return str(json.loads(record.body)["task_token"])
