"""What the SQS consumer shell reports to: a message's visibility and the failure log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from shared.runtime.deliveries import QueueVisibility


class FakeVisibility(QueueVisibility):
    """Records each delay of a message's visibility (receipt handle, seconds)."""

    def __init__(self) -> None:
        self.delays: list[tuple[str, int]] = []

    def delay(self, record: SQSRecord, seconds: int) -> None:
        self.delays.append((record.receipt_handle, seconds))


class FailureLog:
    """Records each failed delivery the consumer shell logs: message, error name, detail."""

    def __init__(self) -> None:
        self.entries: list[tuple[Mapping[str, Any], str, str]] = []

    def __call__(self, message: Mapping[str, Any], error_name: str, detail: str) -> None:
        self.entries.append((message, error_name, detail))
