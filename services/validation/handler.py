"""Validation Lambda: validation-request messages → run or skip, window frozen, lock taken;
approval-request messages → the Approve task's token kept for a person to answer."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from services.validation.approval import request_approval
from services.validation.service import validate_run
from services.validation.settings import Settings
from shared.connectors import check_connection
from shared.runtime import aws
from shared.runtime.catalogue import DetailType, Step
from shared.runtime.deliveries import Delivery
from shared.runtime.events import EventPublisher
from shared.runtime.tasks import TaskKind, task_lambda_handler
from shared.store.db import Database

settings = Settings.from_env()


@cache
def database() -> Database:
    return Database(settings.consumer.database_url, application_name="sourceflow-validation")


def now() -> datetime:
    return datetime.now(UTC)


def validate(request: dict[str, Any], _: Delivery) -> dict[str, Any]:
    return validate_run(
        request,
        db=database(),
        clock=now,
        lease=timedelta(seconds=settings.lock_lease_seconds),
        respecs_tables=settings.respecs.allowed_tables,
        check_connection=check_connection,
        approval_gate=settings.approval.required,
    )


def ask_for_approval(request: dict[str, Any], _: Delivery) -> dict[str, Any] | None:
    publish = EventPublisher(aws.client("events"), settings.approval.event_bus_name)

    def announce(fields: Mapping[str, Any]) -> None:
        publish(DetailType.APPROVAL_REQUESTED, fields, correlation_id=request["correlation_id"])

    return request_approval(
        request,
        db=database(),
        clock=now,
        timeout=timedelta(seconds=settings.approval.timeout_seconds),
        lease=timedelta(seconds=settings.lock_lease_seconds),
        announce=announce,
    )


lambda_handler = task_lambda_handler(
    TaskKind("validation-request", "validation-result", Step.VALIDATE, validate),
    TaskKind("approval-request", "approval-result", Step.APPROVE, ask_for_approval),
    database=database,
    settings=settings.consumer,
)
