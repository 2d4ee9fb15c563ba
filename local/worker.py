"""One service's worker on the embedded stack: Lambda's SQS event source mapping, emulated.

It long-polls the service's queue, hands each batch to the service's `lambda_handler` as a
real SQS event, and deletes only the records the handler did not report in
`batchItemFailures` (a handler that raises fails the whole batch, as on Lambda).
Run as `python -m local.worker SERVICE`; configuration comes from the environment.

A fault point for tests, on the embedded stack only: `SOURCEFLOW_FAULT=SERVICE:after-commit:PATH`
makes the worker of SERVICE die (`os._exit`, as a crashed container would) the moment the
service calls SendTaskSuccess, once its work has committed and before its outcome reaches the
state machine. It fires once in all: the first worker to get there creates the file PATH and
dies; the others, and every later delivery, find PATH and carry on. An empty value, or another
service's name, sets no fault. The worker hooks the Step Functions client that the service's
task callbacks use (`shared.runtime.aws.client`, one per process); the Lambda handlers, and so the
cloud, have no such point.

The function timeout (`SOURCEFLOW_FUNCTION_TIMEOUT`) is what each invocation's Lambda context
says. For the services in `CUT_OFF_AT_TIMEOUT` the worker also enforces it as Lambda does: an
invocation still running at its timeout is cut off, its messages left in flight, and the worker
starts afresh (it re-executes itself, a new container), so a download that overruns its budget
meets here what it would meet in the cloud.
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

from local.lambda_event import LocalLambdaContext, sqs_event
from local.provision import CUT_OFF_AT_TIMEOUT
from shared.runtime import aws

log = logging.getLogger("sourceflow.worker")
# The one fault point a test may set (see the module's docstring), and its exit status.
AFTER_COMMIT = "after-commit"
FAULT_EXIT_STATUS = 70


def run_worker(service: str, queue_url: str, batch_size: int, timeout_seconds: int) -> None:
    handler = importlib.import_module(f"services.{service}.handler").lambda_handler
    _arm_fault(service, os.environ.get("SOURCEFLOW_FAULT", ""))
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
    watchdog = threading.Timer(timeout_seconds, _cut_off, (service, timeout_seconds))
    watchdog.daemon = True
    if service in CUT_OFF_AT_TIMEOUT:
        watchdog.start()
    try:
        response = handler(sqs_event(messages, queue_arn, region), context) or {}
    except Exception:
        log.exception("%s handler raised; the whole batch will be redelivered", service)
        return
    finally:
        watchdog.cancel()
    failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
    done = [
        {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
        for index, message in enumerate(messages)
        if message["MessageId"] not in failed
    ]
    if done:
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=done)


def _cut_off(service: str, timeout_seconds: int) -> None:
    """What Lambda does to an invocation that reaches its timeout: end it wherever it is (its
    messages come back when their visibility lapses) and start the next in a fresh runtime."""
    log.warning(
        "%s invocation cut off at its %d s function timeout; the worker starts afresh",
        service,
        timeout_seconds,
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "local.worker", service])


def _arm_fault(service: str, fault: str) -> None:
    """Die once, at SendTaskSuccess, when `fault` names this service's after-commit point."""
    if not fault:
        return
    named, _, rest = fault.partition(":")
    point, _, marker = rest.partition(":")
    if point != AFTER_COMMIT or not marker:
        raise ValueError(f"SOURCEFLOW_FAULT={fault!r}: expected SERVICE:{AFTER_COMMIT}:PATH")
    if named != service:
        return

    def die_once(**_: Any) -> None:
        try:
            fired = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # another worker, or an earlier delivery, died here already
        os.write(fired, f"{os.getpid()}\n".encode())
        os.close(fired)
        log.warning("fault %s: %s worker dies before SendTaskSuccess", point, service)
        logging.shutdown()
        os._exit(FAULT_EXIT_STATUS)

    aws.client("stepfunctions").meta.events.register("before-call.sfn.SendTaskSuccess", die_once)
    log.warning("fault armed: %s dies once at %s (%s)", service, point, marker)


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
