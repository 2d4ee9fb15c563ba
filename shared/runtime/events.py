"""sourceflow's EventBridge events: publishing them under their contracts, and consuming them
from an SQS queue that a bus rule (or a schedule rule) delivers to.

Consumers read the full EventBridge envelope (`detail-type`, `id`, `time`, `detail`): the local
emulator ignores input paths on targets, and the envelope's id is what makes a duplicate
delivery recognisable.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import ContractViolation, TransientError
from shared.runtime import contracts
from shared.runtime.catalogue import EVENT_SOURCE, SCHEDULED_EVENT, DetailType
from shared.runtime.deliveries import QueueVisibility, TimeLeft, consumer_lambda_handler
from shared.runtime.observability import logger
from shared.runtime.settings import ConsumerSettings
from shared.store.db import Database

# The contract each sourceflow event's detail follows, by its DetailType.
DETAIL_CONTRACTS = {detail_type.value: detail_type.contract for detail_type in DetailType}


class EventPublisher:
    """Puts sourceflow events on the bus, each detail checked against its contract first."""

    def __init__(self, events_client: Any, bus_name: str) -> None:
        self._events, self._bus = events_client, bus_name

    def __call__(
        self,
        detail_type: str,
        fields: Mapping[str, Any],
        correlation_id: str = "",
        *,
        at: datetime | None = None,
    ) -> str:
        """Put one event; returns its EventBridge id. `at` is the envelope's `time` (EventBridge
        keeps whole seconds; by default, when it is put)."""
        detail_type = str(detail_type)  # a DetailType is put, and named in errors, by its value
        name = DETAIL_CONTRACTS.get(detail_type)
        if name is None:
            raise ContractViolation(
                f"{detail_type!r} is not a sourceflow event; known: {sorted(DETAIL_CONTRACTS)}"
            )
        default_correlation = f"{fields.get('source_id', 'sourceflow')}-{name}"
        detail = contracts.message(
            name, correlation_id=correlation_id or default_correlation, **fields
        )
        try:
            entry = {
                "EventBusName": self._bus,
                "Source": EVENT_SOURCE,
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
            }
            response = self._events.put_events(Entries=[{**entry, **({"Time": at} if at else {})}])
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"cannot put {detail_type!r} on {self._bus}: {exc}") from exc
        if response.get("FailedEntryCount"):
            raise TransientError(f"EventBridge refused {detail_type!r}: {response['Entries']}")
        return str(response["Entries"][0]["EventId"])


def parse_event(body: str, accepted: set[str]) -> dict[str, Any]:
    """An EventBridge envelope from an SQS body; a sourceflow detail is checked by contract."""
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise ContractViolation(f"the message is not JSON: {exc}") from None
    if not isinstance(event, dict) or "detail-type" not in event or "detail" not in event:
        raise ContractViolation("the message is not an EventBridge event (no detail-type/detail)")
    if not isinstance(event["detail"], dict):
        raise ContractViolation("the event's detail is not a JSON object")
    detail_type = event["detail-type"]
    if detail_type not in accepted:
        raise ContractViolation(
            f"this consumer does not take {detail_type!r} events; it takes {sorted(accepted)}"
        )
    if detail_type == SCHEDULED_EVENT:
        if event.get("source") != "aws.events":
            raise ContractViolation("a Scheduled Event must come from aws.events")
    else:
        if event.get("source") != EVENT_SOURCE:
            raise ContractViolation(f"a {detail_type!r} event must come from {EVENT_SOURCE!r}")
        contracts.validate(event["detail"], DETAIL_CONTRACTS[detail_type])
    return event


def event_lambda_handler(
    routes: Mapping[str, Callable[[dict[str, Any]], None]],
    *,
    database: Callable[[], Database],
    settings: ConsumerSettings,
) -> Callable[[dict[str, Any], LambdaContext], Any]:
    """A Lambda consuming EventBridge events from SQS, routed by DetailType, with partial batch
    responses: a malformed or failing event is recorded and redelivered alone, with backoff,
    and ends in the DLQ."""
    return consumer_lambda_handler(
        event_record_process(routes), database=database, settings=settings
    )


def event_record_process(
    routes: Mapping[str, Callable[[dict[str, Any]], None]],
) -> Callable[[SQSRecord, QueueVisibility, TimeLeft], None]:
    """How an event consumer handles one record: parsed, checked, and routed by DetailType."""
    accepted = set(routes)

    def process(record: SQSRecord, visibility: QueueVisibility, time_left: TimeLeft) -> None:
        # Event routes take no Delivery, so `visibility` and `time_left` go unused here.
        try:
            event = parse_event(record.body, accepted)
        except ContractViolation as exc:
            logger.error(
                "malformed event", extra={"message_id": record.message_id, "error": str(exc)}
            )
            raise
        source_id = event["detail"].get("source_id")
        with logger.append_context_keys(event_id=event.get("id"), source_id=source_id):
            routes[event["detail-type"]](event)

    return process


def is_event(body: str) -> bool:
    """Whether an SQS body is an EventBridge envelope rather than a message of our own (a queue
    that carries both, as the tasks service's does, routes by it)."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and "detail-type" in data
