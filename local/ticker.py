"""Firing schedule rules where EventBridge cannot (the local emulator never fires them).

Reads the rules from EventBridge itself — the same definitions the cloud runs — and delivers
each one's `Scheduled Event` to its SQS targets, in the envelope EventBridge would use.
`sourceflow tick` fires them once; the embedded stack's `Ticker` fires them on their schedule.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.rules.schedules import Schedule, parse_rule_expression
from shared.runtime.catalogue import SCHEDULED_EVENT
from shared.runtime.observability import logger
from shared.timefmt import isoformat


@dataclass(frozen=True)
class ScheduledRule:
    name: str
    arn: str
    schedule: Schedule
    target_queue_arns: tuple[str, ...]


def scheduled_rules(events: Any, name_prefix: str) -> list[ScheduledRule]:
    rules = [
        rule
        for page in events.get_paginator("list_rules").paginate(NamePrefix=name_prefix)
        for rule in page["Rules"]
    ]
    found = []
    for rule in rules:
        if not rule.get("ScheduleExpression") or rule.get("State") != "ENABLED":
            continue
        targets = [
            target
            for page in events.get_paginator("list_targets_by_rule").paginate(Rule=rule["Name"])
            for target in page["Targets"]
        ]
        found.append(
            ScheduledRule(
                rule["Name"],
                rule["Arn"],
                parse_rule_expression(rule["ScheduleExpression"]),
                tuple(t["Arn"] for t in targets if t["Arn"].split(":")[2] == "sqs"),
            )
        )
    return found


def fire(rule: ScheduledRule, sqs: Any, at: datetime) -> None:
    """Deliver one Scheduled Event of `rule`, timed `at`, to each of its queues."""
    _, _, _, region, account, _ = rule.arn.split(":", 5)
    envelope = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": SCHEDULED_EVENT,
        "source": "aws.events",
        "account": account,
        "time": isoformat(at.replace(microsecond=0)),
        "region": region,
        "resources": [rule.arn],
        "detail": {},
    }
    for queue_arn in rule.target_queue_arns:
        _, _, _, _, owner, name = queue_arn.split(":", 5)
        url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=owner)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(envelope))


def fire_all(events: Any, sqs: Any, name_prefix: str, at: datetime | None = None) -> list[str]:
    """Fire every enabled schedule rule once, now; returns the rule names fired."""
    moment = at or datetime.now(UTC)
    rules = scheduled_rules(events, name_prefix)
    for rule in rules:
        fire(rule, sqs, moment)
    return [rule.name for rule in rules]


class Ticker(threading.Thread):
    """Fires each schedule rule at each of its slots, until stopped."""

    def __init__(self, events: Any, sqs: Any, name_prefix: str) -> None:
        super().__init__(name="sourceflow-ticker", daemon=True)
        self._events, self._sqs, self._prefix = events, sqs, name_prefix
        self._stopping = threading.Event()

    def run(self) -> None:
        rules = scheduled_rules(self._events, self._prefix)
        upcoming = {rule.name: rule.schedule.next_slot(datetime.now(UTC)) for rule in rules}
        while not self._stopping.is_set():
            now = datetime.now(UTC)
            for rule in rules:
                if upcoming[rule.name] <= now:
                    try:
                        fire(rule, self._sqs, upcoming[rule.name])
                    except Exception:  # a failed tick must not stop the next ones
                        logger.exception("could not fire schedule rule", extra={"rule": rule.name})
                    upcoming[rule.name] = rule.schedule.next_slot(now)
            self._stopping.wait(timeout=1.0)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)
