"""Callback task tokens and the one way every service turns an SQS record into a task outcome.

A record's body is a task message from the state machine. The service's work function gets the
validated message and returns the fields of its result; this module wraps them in the result
contract and reports back with SendTaskSuccess, or reports a named SendTaskFailure for a
permanent error, or raises a transient error so that SQS redelivers the record. Work that
returns None has kept the token for a person to answer later (an approval): nothing is reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import DuplicateDelivery, PermanentError, TaskOver, TransientError
from shared.runtime import aws, contracts
from shared.runtime.deliveries import (
    Delivery,
    QueueVisibility,
    TimeLeft,
    consumer_lambda_handler,
    unbounded,
)
from shared.runtime.events import event_record_process, is_event
from shared.runtime.observability import logger
from shared.runtime.redaction import error_text
from shared.runtime.settings import ConsumerSettings
from shared.store.db import Database
from shared.store.runs import failure_recorder

_TASK_OVER_CODES = {"InvalidToken", "TaskTimedOut", "TaskDoesNotExist"}
# Step Functions refused what we sent (too large, malformed): sending it again cannot help.
_REJECTED_CODES = {"InvalidOutput", "ValidationException"}
# Step Functions caps error names at 256 and causes at 32768 characters.
_MAX_ERROR, _MAX_CAUSE = 256, 32768


def _call(operation: Callable[..., Any], **kwargs: Any) -> None:
    try:
        operation(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _TASK_OVER_CODES:
            raise TaskOver(f"the task is over ({code})") from exc
        if code in _REJECTED_CODES:
            raise PermanentError(
                f"Step Functions {operation.__name__} rejected the report: {exc}",
                error_name="TaskReportRejected",
            ) from exc
        raise TransientError(f"Step Functions {operation.__name__} failed: {exc}") from exc
    except BotoCoreError as exc:
        raise TransientError(f"Step Functions unreachable: {exc}") from exc


class TaskCallbacks:
    """SendTaskSuccess / SendTaskFailure / SendTaskHeartbeat for one Step Functions client."""

    def __init__(self, sfn_client: Any) -> None:
        self._sfn = sfn_client

    def succeed(self, token: str, output: Mapping[str, Any]) -> None:
        _call(self._sfn.send_task_success, taskToken=token, output=json.dumps(output))

    def fail(self, token: str, error: str, cause: str) -> None:
        _call(
            self._sfn.send_task_failure,
            taskToken=token,
            error=error[:_MAX_ERROR],
            cause=cause[:_MAX_CAUSE],
        )

    def heartbeat(self, token: str) -> None:
        _call(self._sfn.send_task_heartbeat, taskToken=token)


class FailureRecorder(Protocol):
    """Writes a failure's detail where operators find it (the run ledger), because the local
    emulator drops a SendTaskFailure's cause."""

    def __call__(self, message: Mapping[str, Any], error_name: str, detail: str) -> None: ...


# The fields of the result, or None when a person answers the task later with the kept token.
TaskWork = Callable[[dict[str, Any], Delivery], Mapping[str, Any] | None]


def process_task_record(
    record: SQSRecord,
    *,
    request_contract: str,
    result_contract: str,
    work: TaskWork,
    callbacks: TaskCallbacks,
    record_failure: FailureRecorder,
    max_receives: int,
    visibility: QueueVisibility,
    time_left: TimeLeft = unbounded,
) -> None:
    """Handle one SQS record carrying a task message; raise only to have it redelivered.

    Each outcome has one place: a malformed message in `_parse`; success, a person's answer
    awaited, a transient error retried, and the failure to report by name (a permanent error,
    or a transient one on the last delivery) in `_attempt`; reporting that failure, and a
    message consumed without effect (the task is over, or a duplicate delivery), here.
    """
    message = _parse(record, request_contract)
    delivery = Delivery.of(record, visibility, time_left)
    logger.append_keys(
        # A workflow's task names its workflow run instead of a source's execution.
        source_id=message.get("source_id"),
        execution_arn=message.get("execution_arn", message.get("workflow_run_id")),
        receive_count=delivery.receive_count,
    )
    try:
        failure = _attempt(
            message,
            delivery,
            work=work,
            result_contract=result_contract,
            callbacks=callbacks,
            max_receives=max_receives,
        )
        if failure is not None:
            # The one way a failure's text leaves: to the ledger, and through the task's cause
            # to the Run Failed event and the alert (shared.runtime.redaction).
            detail = error_text(failure.detail)
            record_failure(message, failure.error_name, detail)
            callbacks.fail(message["task_token"], failure.error_name, detail)
    except (TaskOver, DuplicateDelivery) as exc:
        # Reporting to a finished task can never succeed, and a duplicate's work is being done
        # by the delivery that claimed it: retrying either would only loop.
        logger.warning("message consumed without effect", extra={"error": str(exc)})
    finally:
        logger.remove_keys(["source_id", "execution_arn", "receive_count"])


def _parse(record: SQSRecord, request_contract: str) -> dict[str, Any]:
    """The record's task message; a malformed one is logged and raised."""
    try:
        return contracts.parse(record.body, request_contract)
    except contracts.ContractViolation as exc:
        # No trustworthy token to report to: the redrive policy takes it to the DLQ.
        logger.error(
            "malformed message",
            extra={
                "message_id": record.message_id,
                "contract": request_contract,
                "error": str(exc),
            },
        )
        raise


@dataclass(frozen=True)
class _Failure:
    """A failure the task reports by name (SendTaskFailure), recorded first."""

    error_name: str
    detail: str


def _attempt(
    message: dict[str, Any],
    delivery: Delivery,
    *,
    work: TaskWork,
    result_contract: str,
    callbacks: TaskCallbacks,
    max_receives: int,
) -> _Failure | None:
    """Do the work and report its success; None when done (or left for a person to answer),
    else the failure to report. A transient error before the last delivery is raised."""
    started = time.monotonic()
    try:
        fields = work(message, delivery)
        if fields is None:
            logger.info("task answered later, with its kept token (a person, or a run's end)")
            return None
        callbacks.succeed(message["task_token"], _result(message, fields, result_contract))
    except TransientError as exc:
        if delivery.receive_count < max_receives:
            raise  # redelivered after a backoff (see shared.runtime.deliveries.guarded)
        detail = f"{exc} (gave up after {delivery.receive_count} deliveries)"
        logger.error("transient error on the last delivery", extra={"error": detail})
        return _Failure(exc.error_name, detail)
    except PermanentError as exc:
        logger.warning("permanent error", extra={"error_name": exc.error_name, "error": str(exc)})
        return _Failure(exc.error_name, str(exc))
    logger.info("task done", extra={"seconds": round(time.monotonic() - started, 3), **fields})
    return None


def _result(
    message: Mapping[str, Any], fields: Mapping[str, Any], result_contract: str
) -> dict[str, Any]:
    """The work's fields as a result message of the task's contract."""
    try:
        return contracts.message(
            result_contract, correlation_id=message["correlation_id"], **fields
        )
    except contracts.ContractViolation as exc:
        # Our own bug, but the token is good: fail the run now, by name, rather than leave it
        # to the task timeout.
        raise PermanentError(str(exc), error_name="InvalidTaskResult") from exc


@dataclass(frozen=True)
class TaskKind:
    """One kind of task message a service's queue carries: its request and result contracts,
    the state machine step it serves (named in the ledger when it fails), the work, and where
    a failure is recorded (by default the run ledger's row of the message's execution)."""

    request_contract: str
    result_contract: str
    step: str
    work: TaskWork
    recorder: Callable[[Database, str], FailureRecorder] = failure_recorder


RecordProcess = Callable[[SQSRecord, QueueVisibility, TimeLeft], None]


def task_record_process(
    *kinds: TaskKind, database: Callable[[], Database], settings: ConsumerSettings
) -> RecordProcess:
    """How a task service handles one record: it goes to the kind its `schema` names; one no
    kind takes is judged against the first kind's contract, whose error says what was
    expected."""
    by_contract = {kind.request_contract: kind for kind in kinds}

    def process(record: SQSRecord, visibility: QueueVisibility, time_left: TimeLeft) -> None:
        # Only a queue that carries several kinds pays for a look at the body before parsing.
        kind = (
            kinds[0] if len(kinds) == 1 else by_contract.get(_schema_named(record.body), kinds[0])
        )
        process_task_record(
            record,
            request_contract=kind.request_contract,
            result_contract=kind.result_contract,
            work=kind.work,
            callbacks=TaskCallbacks(aws.client("stepfunctions")),
            record_failure=kind.recorder(database(), kind.step),
            max_receives=settings.max_receives,
            visibility=visibility,
            time_left=time_left,
        )

    return process


def task_lambda_handler(
    *kinds: TaskKind,
    database: Callable[[], Database],
    settings: ConsumerSettings,
    events: Mapping[str, Callable[[dict[str, Any]], None]] | None = None,
) -> Callable[[dict[str, Any], LambdaContext], Any]:
    """The Lambda entry point of a task service: an SQS batch with partial batch responses.

    A queue that also carries EventBridge events (the tasks service's: the run ends its ingest
    tasks wait for) routes them by DetailType to `events`. A record that raises (malformed,
    transient, or a bug) is recorded, delayed by the retry backoff and reported in
    `batchItemFailures`; only it is redelivered, the rest of the batch is deleted.
    """
    tasks = task_record_process(*kinds, database=database, settings=settings)
    routed = event_record_process(events) if events else None

    def process(record: SQSRecord, visibility: QueueVisibility, time_left: TimeLeft) -> None:
        by_body = routed if routed is not None and is_event(record.body) else tasks
        by_body(record, visibility, time_left)

    return consumer_lambda_handler(process, database=database, settings=settings)


def _schema_named(body: str) -> Any:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("schema") if isinstance(data, dict) else None
