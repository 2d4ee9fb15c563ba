"""The schedule: firing its rules as the ticker would, and waiting for the scheduler."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from infra.resources import Names
from local.stack import LocalStack
from local.ticker import fire_all
from tests.e2e.harness.stack import Aws
from tests.e2e.harness.waits import WAIT_SECONDS


@dataclass
class Ticks:
    stack: LocalStack
    aws: Aws

    def tick(self, at: datetime | None = None) -> None:
        """Fire the schedule rules once and wait until the scheduler has handled the tick."""
        fire_all(
            self.aws("events"),
            self.aws("sqs"),
            Names(self.stack.env["SOURCEFLOW_STAGE"]).prefix,
            at=at,
        )
        self.wait_for_scheduler()

    def wait_for_scheduler(self, timeout: float = WAIT_SECONDS) -> None:
        self.wait_until_idle(self.stack.env["SCHEDULER_QUEUE_URL"], timeout)

    def wait_until_idle(self, queue_url: str, timeout: float = WAIT_SECONDS) -> None:
        """Until the queue is empty and nothing is in flight, twice in a row."""
        sqs = self.aws("sqs")
        idle_checks, deadline = 0, time.monotonic() + timeout
        while idle_checks < 2:
            attributes = sqs.get_queue_attributes(
                QueueUrl=queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            busy = sum(int(value) for value in attributes.values())
            idle_checks = idle_checks + 1 if busy == 0 else 0
            assert time.monotonic() < deadline, f"{queue_url} still busy: {attributes}"
            time.sleep(0.3)
