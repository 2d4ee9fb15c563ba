"""What the stack tells people: the events on the notifications queue and the alerts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from local.stack import LocalStack
from tests.e2e.harness.stack import Aws
from tests.e2e.harness.waits import WAIT_SECONDS


@dataclass
class Events:
    stack: LocalStack
    aws: Aws

    def alerts_about(self, source_id: str) -> list[str]:
        """The alerts naming the source among those one read of the alerts queue takes; every
        alert read is deleted."""
        sqs, alerts = self.aws("sqs"), self.stack.env["ALERTS_QUEUE_URL"]
        found = []
        for message in sqs.receive_message(
            QueueUrl=alerts, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", []):
            sqs.delete_message(QueueUrl=alerts, ReceiptHandle=message["ReceiptHandle"])
            if source_id in message["Body"]:
                found.append(str(message["Body"]))
        return found

    def notifications(
        self,
        key: Callable[[dict[str, Any]], str | None],
        wanted: set[str],
        timeout: float = WAIT_SECONDS,
    ) -> dict[str, Any]:
        """Events on the notifications queue whose `key` is in `wanted`.

        Every event read is deleted; the `events` and `harness` fixtures drain the queue before
        each test.
        """
        found: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while set(found) != wanted and time.monotonic() < deadline:
            for event in self._take_notifications(wait_seconds=1):
                if key(event) in wanted:
                    found[str(key(event))] = event
        return found

    def outcome_events(self, execution_arns: set[str]) -> dict[str, Any]:
        """Run Succeeded / Run Failed events of these executions."""
        return self.notifications(lambda e: e["detail"].get("execution_arn"), execution_arns)

    def drain_notifications(self) -> None:
        while self._take_notifications(wait_seconds=0):
            pass

    def _take_notifications(self, wait_seconds: int) -> list[dict[str, Any]]:
        sqs, queue_url = self.aws("sqs"), self.stack.env["NOTIFICATIONS_QUEUE_URL"]
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
        ).get("Messages", [])
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return [json.loads(message["Body"]) for message in messages]
