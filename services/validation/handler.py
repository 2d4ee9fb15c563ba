"""Validation Lambda: validation-request → run or skip; approval-request → wait for a person."""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import Any

from services.validation.approval import ask_for_approval
from services.validation.service import validate_run
from services.validation.settings import Settings
from shared.connectors import source_access
from shared.runtime import aws, catalogue
from shared.runtime.deliveries import Delivery
from shared.runtime.events import EventPublisher
from shared.runtime.tasks import TaskKind, task_lambda_handler
from shared.store.db import Database

settings = Settings.from_env()
lease = timedelta(seconds=settings.lock_lease_seconds)


@cache
def database() -> Database:
    return settings.consumer.database("validation")


@cache
def publisher() -> EventPublisher:
    return EventPublisher(aws.client("events"), settings.approval.event_bus_name)


def validate(request: dict[str, Any], _: Delivery) -> dict[str, Any]:
    return validate_run(
        request,
        db=database(),
        lease=lease,
        respecs_tables=settings.respecs.allowed_tables,
        approval_gate=settings.approval.required,
        check_connection=source_access(settings.sources).check,
    )


def approve(request: dict[str, Any], _: Delivery) -> dict[str, Any] | None:
    wait = timedelta(seconds=settings.approval.timeout_seconds)
    return ask_for_approval(request, db=database(), timeout=wait, lease=lease, publish=publisher())


lambda_handler = task_lambda_handler(
    TaskKind("validation-request", "validation-result", catalogue.Step.VALIDATE, validate),
    TaskKind("approval-request", "approval-result", catalogue.Step.APPROVE, approve),
    database=database,
    settings=settings.consumer,
)
