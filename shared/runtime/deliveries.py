"""SQS deliveries as Lambda's event source mapping hands them over, and what a failed one
leaves behind.

A record whose handler raises is reported in `batchItemFailures`; SQS hands it out again once
its visibility timeout ends, up to the queue's maxReceiveCount, then the redrive policy moves
it to the DLQ. Before it goes back, `guarded` records why it failed (for `sourceflow dlq list`)
and stretches its visibility timeout for exponential backoff.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from shared.runtime import aws
from shared.runtime.catalogue import RetryPolicy
from shared.runtime.observability import count_deliveries, log_metrics, logger, tracer
from shared.runtime.redaction import error_text
from shared.runtime.settings import ConsumerSettings
from shared.store.db import Database


def queue_name(queue_arn: str) -> str:
    return queue_arn.rsplit(":", 1)[1]


def receive_count_of(record: SQSRecord) -> int:
    """How many times SQS has handed this message out, this delivery included."""
    return int(record.attributes.approximate_receive_count or 1)


class QueueVisibility:
    """Changes when SQS hands a received message out again."""

    def __init__(self, sqs_client: Any) -> None:
        self._sqs = sqs_client
        self._queue_url = cache(self._lookup_queue_url)

    def _lookup_queue_url(self, queue_arn: str) -> str:
        _, _, _, _, account, name = queue_arn.split(":", 5)
        response = self._sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
        return str(response["QueueUrl"])

    def delay(self, record: SQSRecord, seconds: int) -> None:
        """From now, keep the message hidden `seconds` more (backoff, or a long job's lease)."""
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self._queue_url(record.event_source_arn),
                ReceiptHandle=record.receipt_handle,
                VisibilityTimeout=seconds,
            )
        except (ClientError, BotoCoreError) as exc:
            # The queue's own visibility timeout still brings the message back.
            logger.warning("could not change the message's visibility", extra={"error": str(exc)})


TimeLeft = Callable[[], float]
"""Seconds the invocation handling a delivery has left before its function timeout."""


def unbounded() -> float:
    """The time left of an invocation without a known end (called outside Lambda)."""
    return math.inf


def time_left_of(context: LambdaContext | None) -> TimeLeft:
    """What Lambda's context says the invocation has left."""
    if context is None:
        return unbounded
    return lambda: context.get_remaining_time_in_millis() / 1000


@dataclass(frozen=True)
class Delivery:
    """The SQS delivery a message came in: which message, how many times it was handed out,
    how to keep it hidden while a long job on it is alive, and how long its invocation has
    left (a long job stops in time to be continued)."""

    message_id: str
    receive_count: int
    keep_hidden: Callable[[int], None]
    time_left: TimeLeft = unbounded

    @classmethod
    def of(
        cls, record: SQSRecord, visibility: QueueVisibility, time_left: TimeLeft = unbounded
    ) -> Delivery:
        return cls(
            message_id=record.message_id,
            receive_count=receive_count_of(record),
            keep_hidden=lambda seconds: visibility.delay(record, seconds),
            time_left=time_left,
        )


class FailureLog:
    """Writes the last error each message met, keyed by queue and message id."""

    def __init__(self, database: Callable[[], Database]) -> None:
        self._database = database

    def __call__(self, record: SQSRecord, error: BaseException) -> None:
        text = error_text(f"{type(error).__name__}: {error}")
        try:
            with self._database().transaction() as cur:
                cur.execute(
                    """
                    INSERT INTO public.delivery_failure (queue, message_id, receive_count, error)
                    VALUES (%s, %s, %s, %s)
                    ON CONFLICT (queue, message_id) DO UPDATE
                       SET receive_count = EXCLUDED.receive_count, error = EXCLUDED.error,
                           failed_at = now()
                    """,
                    (
                        queue_name(record.event_source_arn),
                        record.message_id,
                        receive_count_of(record),
                        text,
                    ),
                )
        except Exception as exc:  # the database may be what failed; the log still has it
            logger.warning("could not record the delivery failure", extra={"error": str(exc)})


def guarded(
    record_handler: Callable[[SQSRecord], None],
    *,
    retry: RetryPolicy,
    visibility: QueueVisibility,
    failure_log: FailureLog,
) -> Callable[[SQSRecord], None]:
    """A record handler whose failures are recorded and retried with backoff before they
    propagate (to be reported in batchItemFailures)."""

    def handle(record: SQSRecord) -> None:
        try:
            record_handler(record)
        except Exception as exc:
            logger.exception("delivery failed; SQS will hand it out again")
            failure_log(record, exc)
            visibility.delay(record, retry.backoff_seconds(receive_count_of(record)))
            raise

    return handle


def batch_lambda_handler(
    record_handler: Callable[[SQSRecord], None],
) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """Lambda's entry point for an SQS event source mapping with ReportBatchItemFailures: each
    record is handled alone, and only the ones that raised are handed back for redelivery.

    A batch whose every record failed is answered the same way instead of raising, so Lambda's
    Errors metric (the errors alarm) counts only invocations that crashed or timed out; failed
    deliveries have their own metric. The invocation is traced, its log lines carry the Lambda
    context, and its metrics are flushed when it ends.
    """
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    @logger.inject_lambda_context
    @tracer.capture_lambda_handler
    @log_metrics
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        response = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
        count_deliveries(len(event["Records"]), len(response["batchItemFailures"]))
        return dict(response)

    return lambda_handler


def consumer_lambda_handler(
    process: Callable[[SQSRecord, QueueVisibility, TimeLeft], None],
    *,
    database: Callable[[], Database],
    settings: ConsumerSettings,
) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """The Lambda entry point of a queue consumer: `process` handles one record, given the
    queue's visibility (to keep a long job's message hidden) and the time the invocation has
    left; a record it fails is recorded, delayed by the retry backoff and reported in
    `batchItemFailures`.

    The SQS client is made when the first record arrives, not when the handler is built.
    """
    retry = RetryPolicy(settings.max_receives, settings.retry_backoff_seconds)
    failure_log = FailureLog(database)

    @cache
    def visibility() -> QueueVisibility:
        return QueueVisibility(aws.client("sqs"))

    # powertools hands the Lambda context to a record handler with a `lambda_context` argument.
    def record_handler(record: SQSRecord, lambda_context: LambdaContext | None = None) -> None:
        queue, time_left = visibility(), time_left_of(lambda_context)
        guarded(
            lambda each: process(each, queue, time_left),
            retry=retry,
            visibility=queue,
            failure_log=failure_log,
        )(record)

    return batch_lambda_handler(record_handler)
