"""Validation Lambda: validation-request messages → run or skip, window frozen, lock taken;
approval-request messages → the Approve task's token kept for a person to answer."""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import Any

from services.validation.approval import ask_for_approval
from services.validation.service import validate_run
from services.validation.settings import Settings
from shared.runtime import aws
from shared.runtime.catalogue import Step
from shared.runtime.deliveries import Delivery
from shared.runtime.events import EventPublisher
from shared.runtime.tasks import TaskKind, task_lambda_handler
from shared.store.db import Database

settings = Settings.from_env()
lease = timedelta(seconds=settings.lock_lease_seconds)


@cache
def database() -> Database:
    return Database(settings.consumer.database_url, application_name="sourceflow-validation")


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
    )


def approve(request: dict[str, Any], _: Delivery) -> dict[str, Any] | None:
    wait = timedelta(seconds=settings.approval.timeout_seconds)
    return ask_for_approval(request, db=database(), timeout=wait, lease=lease, publish=publisher())


lambda_handler = task_lambda_handler(
    TaskKind("validation-request", "validation-result", Step.VALIDATE, validate),
    TaskKind("approval-request", "approval-result", Step.APPROVE, approve),
    database=database,
    settings=settings.consumer,
)
