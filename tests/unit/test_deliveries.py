"""shared.runtime.deliveries: a failed delivery is recorded, delayed by the backoff, and
re-raised."""

from __future__ import annotations

import math
from typing import Any, cast

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from local.lambda_event import LocalLambdaContext
from shared.errors import TransientError
from shared.runtime import aws
from shared.runtime.deliveries import (
    Delivery,
    FailureLog,
    QueueVisibility,
    RetryPolicy,
    batch_lambda_handler,
    consumer_lambda_handler,
    guarded,
    time_left_of,
)
from shared.runtime.settings import ConsumerSettings
from tests.builders import sqs_record

QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:sourceflow-local-download"


def record(receive_count: int = 1) -> SQSRecord:
    return sqs_record(
        "{}",
        receive_count=receive_count,
        message_id="m-1",
        receipt_handle="rh-1",
        queue_arn=QUEUE_ARN,
    )


class FakeSqs:
    def __init__(self) -> None:
        self.visibility_changes: list[dict[str, Any]] = []
        self.lookups = 0

    def get_queue_url(self, *, QueueName: str, QueueOwnerAWSAccountId: str) -> dict[str, str]:
        self.lookups += 1
        return {"QueueUrl": f"http://sqs.local/{QueueOwnerAWSAccountId}/{QueueName}"}

    def change_message_visibility(self, **kwargs: Any) -> None:
        self.visibility_changes.append(kwargs)


class RecordingFailureLog(FailureLog):
    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []

    def __call__(self, record: SQSRecord, error: BaseException) -> None:
        self.entries.append((record.message_id, str(error)))


def test_backoff_doubles_per_receive_up_to_the_cap() -> None:
    policy = RetryPolicy(max_receives=10, base_backoff_seconds=5, max_backoff_seconds=60)
    assert [policy.backoff_seconds(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_a_sub_second_base_still_waits_a_whole_second() -> None:
    policy = RetryPolicy(max_receives=5, base_backoff_seconds=0.5)
    assert [policy.backoff_seconds(n) for n in range(1, 4)] == [1, 1, 2]


@pytest.mark.parametrize("error", [TransientError("db down"), KeyError("a bug")])
def test_a_failed_delivery_is_recorded_delayed_and_reraised(error: Exception) -> None:
    # Given a handler that fails on its third delivery
    sqs, failures = FakeSqs(), RecordingFailureLog()
    retry = RetryPolicy(max_receives=5, base_backoff_seconds=2)

    def handler(_: SQSRecord) -> None:
        raise error

    # When the guarded handler runs, Then the error propagates (for batchItemFailures)
    with pytest.raises(type(error)):
        guarded(handler, retry=retry, visibility=QueueVisibility(sqs), failure_log=failures)(
            record(receive_count=3)
        )
    # And its error is recorded and its next delivery waits the backoff for delivery 3
    assert failures.entries == [("m-1", str(error))]
    [change] = sqs.visibility_changes
    assert change == {
        "QueueUrl": "http://sqs.local/123456789012/sourceflow-local-download",
        "ReceiptHandle": "rh-1",
        "VisibilityTimeout": 8,
    }


def test_a_delivery_that_succeeds_leaves_no_trace() -> None:
    sqs, failures = FakeSqs(), RecordingFailureLog()
    guarded(
        lambda _: None,
        retry=RetryPolicy(3, 1),
        visibility=QueueVisibility(sqs),
        failure_log=failures,
    )(record())
    assert failures.entries == [] and sqs.visibility_changes == []


def test_the_queue_url_is_looked_up_once_per_queue() -> None:
    sqs = FakeSqs()
    visibility = QueueVisibility(sqs)
    for _ in range(3):
        visibility.delay(record(), 5)
    assert sqs.lookups == 1 and len(sqs.visibility_changes) == 3


def test_a_delivery_keeps_its_message_hidden_on_request() -> None:
    sqs = FakeSqs()
    delivery = Delivery.of(record(receive_count=2), QueueVisibility(sqs))
    delivery.keep_hidden(30)
    assert (delivery.message_id, delivery.receive_count) == ("m-1", 2)
    assert sqs.visibility_changes[0]["VisibilityTimeout"] == 30


def test_the_failure_log_never_raises_when_the_database_is_down() -> None:
    def no_database() -> Any:
        raise TransientError("cannot connect to PostgreSQL")

    FailureLog(no_database)(record(), KeyError("x"))


def lambda_context() -> LambdaContext:
    # The attributes powertools reads, as the embedded stack's workers pass them.
    return cast(LambdaContext, LocalLambdaContext("sourceflow-test-download", timeout_seconds=60))


def sqs_event(*message_ids: str) -> dict[str, Any]:
    return {
        "Records": [
            {**record().raw_event, "messageId": message_id, "receiptHandle": f"rh-{message_id}"}
            for message_id in message_ids
        ]
    }


def test_only_the_records_that_raised_are_handed_back() -> None:
    # powertools hands each record over as the keyword argument `record`
    def handler(record: SQSRecord) -> None:
        if record.message_id == "bad":
            raise TransientError("vendor down")

    response = batch_lambda_handler(handler)(sqs_event("ok", "bad"), lambda_context())

    assert response == {"batchItemFailures": [{"itemIdentifier": "bad"}]}


def test_a_batch_that_failed_entirely_is_answered_not_raised() -> None:
    # Lambda's Errors metric (and its alarm) must count crashes only, not failed deliveries.
    def handler(record: SQSRecord) -> None:
        raise TransientError("database down")

    response = batch_lambda_handler(handler)(sqs_event("a", "b"), lambda_context())

    assert response == {"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]}


def test_a_consumer_is_told_the_time_its_invocation_has_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a queue consumer
    monkeypatch.setattr(aws, "client", lambda name: FakeSqs())
    told: list[float] = []
    settings = ConsumerSettings("postgresql://db/x", max_receives=3, retry_backoff_seconds=1)
    handler = consumer_lambda_handler(
        lambda record, visibility, time_left: told.append(time_left()),
        database=lambda: cast(Any, None),
        settings=settings,
    )

    # When an invocation of a 60 s function hands it a record
    handler(sqs_event("m"), lambda_context())

    # Then it hears what the Lambda context says is left; outside Lambda no end is known
    [left] = told
    assert 55 < left <= 60
    assert time_left_of(None)() == math.inf
    assert Delivery.of(record(), QueueVisibility(FakeSqs())).time_left() == math.inf
