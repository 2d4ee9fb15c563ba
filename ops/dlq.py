"""Dead letters: list what the redrive policies set aside, and replay it once it can succeed.

Only plain SQS and Step Functions calls (no StartMessageMoveTask, which the emulator lacks),
so the same code works against AWS and the embedded stack. A task message whose task is over
(its execution ended, or its token expired) is parked in `public.parked_message` with the
reason instead of being replayed into a loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from botocore.exceptions import ClientError
from psycopg2.extras import Json

from infra.resources import SERVICES, Names
from shared.store.db import Database

_PEEK_SECONDS = 60  # long enough to list or replay a DLQ page by page
# History events after which a task no longer waits for its token.
_TASK_ENDINGS = {
    "TaskSucceeded",
    "TaskFailed",
    "TaskTimedOut",
    "TaskStateAborted",
    "TaskStateExited",
}


@dataclass(frozen=True)
class DeadLetter:
    service: str
    message_id: str
    receipt_handle: str
    body: str
    message_attributes: dict[str, Any]
    sent_at: datetime
    receive_count: int
    error: str | None

    @cached_property
    def parsed(self) -> dict[str, Any]:
        """The body as a JSON object ({} if it is not one); decoded once."""
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @property
    def source_id(self) -> str | None:
        return self.parsed.get("source_id") or _detail(self.parsed).get("source_id")

    @property
    def execution_arn(self) -> str | None:
        return self.parsed.get("execution_arn")

    @property
    def schema(self) -> str:
        parsed = self.parsed
        if not parsed:
            return "(not a JSON object)"
        return str(parsed.get("schema") or parsed.get("detail-type") or "(unknown)")

    def as_row(self, now: datetime) -> dict[str, Any]:
        return {
            "queue": self.service,
            "message_id": self.message_id,
            "age_seconds": int((now - self.sent_at).total_seconds()),
            "receive_count": self.receive_count,
            "source_id": self.source_id,
            "execution_arn": self.execution_arn,
            "schema": self.schema,
            "error": self.error,
        }


def _detail(parsed: dict[str, Any]) -> dict[str, Any]:
    detail = parsed.get("detail")
    return detail if isinstance(detail, dict) else {}


def resolve_service(name: str) -> str:
    """`download`, or a queue name like `sourceflow-local-download(-dlq)`, → `download`."""
    for service in SERVICES:
        if name == service or name.endswith(f"-{service}") or name.endswith(f"-{service}-dlq"):
            return service
    raise ValueError(f"unknown queue {name!r}; the queues are {', '.join(SERVICES)}")


@contextmanager
def held(sqs: Any, names: Names, service: str) -> Iterator[tuple[str, list[DeadLetter]]]:
    """Every message in a service's DLQ, hidden while the caller works on them; whatever the
    caller did not delete becomes visible again afterwards."""
    dlq_url = sqs.get_queue_url(QueueName=names.dlq(service))["QueueUrl"]
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=dlq_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=_PEEK_SECONDS,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
        WaitTimeSeconds=0,
    ).get("Messages", []):
        messages.extend(batch)
    letters = [_letter(service, message) for message in messages]
    try:
        yield dlq_url, letters
    finally:
        for letter in letters:
            with suppress(ClientError):  # deleted (replayed or parked) meanwhile
                sqs.change_message_visibility(
                    QueueUrl=dlq_url, ReceiptHandle=letter.receipt_handle, VisibilityTimeout=0
                )


def _letter(service: str, message: dict[str, Any]) -> DeadLetter:
    attributes = message.get("Attributes", {})
    return DeadLetter(
        service=service,
        message_id=message["MessageId"],
        receipt_handle=message["ReceiptHandle"],
        body=message["Body"],
        message_attributes=message.get("MessageAttributes", {}),
        sent_at=datetime.fromtimestamp(int(attributes.get("SentTimestamp", 0)) / 1000, UTC),
        # Minus the receive made to list it.
        receive_count=max(int(attributes.get("ApproximateReceiveCount", 1)) - 1, 0),
        error=None,
    )


def with_errors(db: Database, letters: list[DeadLetter], names: Names) -> list[DeadLetter]:
    """Each letter with the last error its work queue's consumer recorded for it."""
    if not letters:
        return letters
    with db.transaction() as cur:
        cur.execute(
            "SELECT queue, message_id, error FROM public.delivery_failure"
            " WHERE message_id = ANY(%s)",
            ([letter.message_id for letter in letters],),
        )
        errors = {(row["queue"], row["message_id"]): row["error"] for row in cur.fetchall()}
    return [
        replace(letter, error=errors.get((names.queue(letter.service), letter.message_id)))
        for letter in letters
    ]


def list_dead_letters(
    sqs: Any, db: Database, names: Names, services: tuple[str, ...] = SERVICES
) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for service in services:
        with held(sqs, names, service) as (_, letters):
            rows.extend(letter.as_row(now) for letter in with_errors(db, letters, names))
    return rows


def task_over_reason(sfn: Any, letter: DeadLetter) -> str | None:
    """Why replaying this task message can never succeed, or None if it still can.

    Read from the execution's history, the same on AWS and the emulator: the task the message
    belongs to is the one scheduled with its token, and it is over once that task has ended.
    """
    parsed = letter.parsed
    execution_arn, token = parsed.get("execution_arn"), parsed.get("task_token")
    if not execution_arn or not token:
        return None  # not a task message: replaying it is always safe
    try:
        status = sfn.describe_execution(executionArn=execution_arn)["status"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
            return f"execution {execution_arn} does not exist"
        raise
    if status != "RUNNING":
        return f"execution {execution_arn} has ended ({status})"
    waiting = None
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
    for event in (event for page in pages for event in page["events"]):
        if event["type"] == "TaskScheduled":
            parameters = json.loads(event["taskScheduledEventDetails"].get("parameters", "{}"))
            body = parameters.get("MessageBody")
            if isinstance(body, dict) and body.get("task_token") == token:
                waiting = True
        elif waiting and event["type"] in _TASK_ENDINGS:
            waiting = False
    if waiting is None:
        return f"no task of execution {execution_arn} carries this token"
    return None if waiting else "its task is over (ended or timed out)"


def replay(
    sqs: Any,
    sfn: Any,
    db: Database,
    names: Names,
    service: str,
    *,
    dry_run: bool = False,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Move a service's dead letters back to its work queue (body and attributes kept), or
    park the ones whose task is over. Returns what was done to each."""
    work_url = sqs.get_queue_url(QueueName=names.queue(service))["QueueUrl"]
    outcomes = []
    with held(sqs, names, service) as (dlq_url, letters):
        for letter in with_errors(db, letters, names)[:limit]:
            reason = task_over_reason(sfn, letter)
            action = (
                ("would park" if dry_run else "parked")
                if reason
                else ("would replay" if dry_run else "replayed")
            )
            if not dry_run:
                if reason:
                    _park(db, names.dlq(service), letter, reason)
                else:
                    extra = (
                        {"MessageAttributes": letter.message_attributes}
                        if letter.message_attributes
                        else {}
                    )
                    sqs.send_message(QueueUrl=work_url, MessageBody=letter.body, **extra)
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=letter.receipt_handle)
            outcomes.append(
                {**letter.as_row(datetime.now(UTC)), "action": action, "reason": reason}
            )
    return outcomes


def _park(db: Database, queue: str, letter: DeadLetter, reason: str) -> None:
    with db.transaction() as cur:
        cur.execute(
            """
            INSERT INTO public.parked_message (queue, message_id, body, attributes, reason)
            VALUES (%s, %s, %s, %s, %s) ON CONFLICT (queue, message_id) DO NOTHING
            """,
            (queue, letter.message_id, letter.body, Json(letter.message_attributes), reason),
        )
