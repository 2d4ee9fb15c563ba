"""The unit harness of shared.runtime.tasks.process_task_record: the work a task does, and the
function run for the validation queue reporting to fakes (tests/fakes; the SQS records it
takes are built by tests/builders)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from shared.runtime.deliveries import Delivery, RetryPolicy
from shared.runtime.tasks import process_task_record
from tests.fakes import FailureLog, FakeCallbacks, FakeVisibility

RETRY = RetryPolicy(max_receives=3, base_backoff_seconds=2, max_backoff_seconds=30)


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
