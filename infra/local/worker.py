"""One service's worker on the embedded stack: Lambda's SQS event source mapping, emulated.

It long-polls the service's queue, hands each batch to the service's `lambda_handler` as a
real SQS event, and deletes only the records the handler did not report in
`batchItemFailures` (a handler that raises fails the whole batch, as on Lambda).
Run as `python -m infra.local.worker SERVICE`; configuration comes from the environment.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any

import boto3

from infra.local.lambda_event import LocalLambdaContext, sqs_event

log = logging.getLogger("sourceflow.worker")


def run_worker(service: str, queue_url: str, batch_size: int, timeout_seconds: int) -> None:
    handler = importlib.import_module(f"services.{service}.handler").lambda_handler
    sqs = boto3.client("sqs")
    region = sqs.meta.region_name
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())

    log.info("worker for %s polling %s", service, queue_url)
    while not stopping.is_set():
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=batch_size,
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if messages:
            _invoke(handler, sqs, queue_url, messages, queue_arn, region, service, timeout_seconds)


def _invoke(
    handler: Any,
    sqs: Any,
    queue_url: str,
    messages: list[dict[str, Any]],
    queue_arn: str,
    region: str,
    service: str,
    timeout_seconds: int,
) -> None:
    context = LocalLambdaContext(f"sourceflow-local-{service}", timeout_seconds)
    try:
        response = handler(sqs_event(messages, queue_arn, region), context) or {}
    except Exception:
        log.exception("%s handler raised; the whole batch will be redelivered", service)
        return
    failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
    done = [
        {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
        for index, message in enumerate(messages)
        if message["MessageId"] not in failed
    ]
    if done:
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=done)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    service = sys.argv[1]
    run_worker(
        service,
        queue_url=os.environ["SOURCEFLOW_QUEUE_URL"],
        batch_size=int(os.environ.get("SOURCEFLOW_BATCH_SIZE", "10")),
        timeout_seconds=int(os.environ.get("SOURCEFLOW_FUNCTION_TIMEOUT", "900")),
    )


if __name__ == "__main__":
    main()
