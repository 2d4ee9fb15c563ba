"""Validation Lambda: validation-request messages → run or skip, window frozen, lock taken."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from services.validation.logic import validate_run
from services.validation.settings import Settings
from shared.connectors import check_connection
from shared.db import Database
from shared.deliveries import Delivery
from shared.tasks import task_lambda_handler

settings = Settings.from_env()


@cache
def database() -> Database:
    return Database(settings.consumer.database_url, application_name="sourceflow-validation")


def validate(request: dict[str, Any], _: Delivery) -> dict[str, Any]:
    return validate_run(
        request,
        db=database(),
        clock=lambda: datetime.now(UTC),
        lease=timedelta(seconds=settings.lock_lease_seconds),
        respecs_tables=settings.respecs.allowed_tables,
        check_connection=check_connection,
    )


lambda_handler = task_lambda_handler(
    service="validation",
    step="Validate",
    work=validate,
    database=database,
    settings=settings.consumer,
)
