"""Dead letters: list what the redrive policies set aside, replay it once it can succeed, and
delete what never will.

Only plain SQS and Step Functions calls (no StartMessageMoveTask, which the emulator lacks),
so the same code works against AWS and the embedded stack. A task message whose task is over
(its execution ended, or its token expired) is parked in `public.parked_message` with the
reason instead of being replayed into a loop; a body its consumer would refuse again (not
JSON, an unknown schema or version, one its contract refuses) stays in the DLQ, for a person to
delete. A deleted dead letter is kept in `public.parked_message` too, with who deleted it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache, cached_property
from typing import Any

from botocore.exceptions import ClientError
from psycopg2.extras import Json

from infra import statemachine
from infra.resources import (
    SCHEDULER_COMMAND_DETAIL_TYPES,
    SERVICES,
    Names,
    state_machine_substitutions,
)
from ops.config import OperatorError
from shared.errors import ContractViolation
from shared.runtime import contracts
from shared.runtime.catalogue import CLOUD_TIMEOUTS, SCHEDULED_EVENT
from shared.runtime.events import parse_event
from shared.store.db import Database, session_login

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
    raise OperatorError(
        f"unknown queue {name!r}; the queues are {', '.join(SERVICES)} (or their names, e.g. "
        "sourceflow-local-download-dlq)"
    )


# The events the scheduler's queue is sent: its schedule rules' and its command rule's.
SCHEDULER_EVENTS = frozenset({SCHEDULED_EVENT, *SCHEDULER_COMMAND_DETAIL_TYPES})


@cache
def task_messages() -> dict[str, tuple[str, ...]]:
    """The schemas the state machine's tasks send to each task service's queue, read from its
    definition (rendered with each queue's URL standing for its service)."""
    definition = statemachine.render(
        state_machine_substitutions(
            {service: service for service in SERVICES}, "bus", "topic", CLOUD_TIMEOUTS
        )
    )
    return statemachine.queue_messages(definition)


def refusal(letter: DeadLetter) -> str | None:
    """Why the letter's consumer would refuse its body again, as the consumer words it (not
    JSON, an unknown schema or version, what its contract refuses), or None if it would take
    it: judged by shared.runtime.events for the scheduler's events, by the contract its schema
    names (else the queue's first, as shared.runtime.tasks does) for a task message."""
    try:
        if letter.service == "scheduler":
            parse_event(letter.body, set(SCHEDULER_EVENTS))
        else:
            accepted = task_messages()[letter.service]
            named = letter.parsed.get("schema")
            contracts.parse(letter.body, named if named in accepted else accepted[0])
    except ContractViolation as exc:
        return str(exc)
    return None


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
    """Move a service's dead letters back to its work queue (body and attributes kept), park
    the ones whose task is over, and leave in the DLQ the ones its consumer would refuse again.
    Returns what was done to each."""
    work_url = sqs.get_queue_url(QueueName=names.queue(service))["QueueUrl"]
    outcomes = []
    with held(sqs, names, service) as (dlq_url, letters):
        for letter in with_errors(db, letters, names)[:limit]:
            refused = refusal(letter)
            if refused:
                action = "would fail again" if dry_run else "left: would fail again"
                outcomes.append(
                    {**letter.as_row(datetime.now(UTC)), "action": action, "reason": refused}
                )
                continue
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


def delete(
    sqs: Any, db: Database, names: Names, service: str, message_ids: Collection[str], *, how: str
) -> list[dict[str, Any]]:
    """Delete these dead letters from the service's DLQ, each kept first in
    `public.parked_message` with who deleted it and `how`; returns the ones deleted (a letter
    replayed or deleted by someone else meanwhile is not among them)."""
    with db.transaction() as cur:
        reason = f"deleted by {session_login(cur)} with {how}"
    deleted = []
    with held(sqs, names, service) as (dlq_url, letters):
        for letter in with_errors(db, letters, names):
            if letter.message_id in message_ids:
                _park(db, names.dlq(service), letter, reason)
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=letter.receipt_handle)
                deleted.append({**letter.as_row(datetime.now(UTC)), "action": "deleted"})
    return deleted


def _park(db: Database, queue: str, letter: DeadLetter, reason: str) -> None:
    with db.transaction() as cur:
        cur.execute(
            """
            INSERT INTO public.parked_message (queue, message_id, body, attributes, reason)
            VALUES (%s, %s, %s, %s, %s) ON CONFLICT (queue, message_id) DO NOTHING
            """,
            (queue, letter.message_id, letter.body, Json(letter.message_attributes), reason),
        )
