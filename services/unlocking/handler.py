"""Unlocking Lambda: unlocking-request messages → cursor moved (on success), lock released."""

from __future__ import annotations

from functools import cache
from typing import Any

from services.unlocking.service import unlock_run
from services.unlocking.settings import Settings
from shared.runtime.catalogue import Step
from shared.runtime.deliveries import Delivery
from shared.runtime.tasks import TaskKind, task_lambda_handler
from shared.store.db import Database

settings = Settings.from_env()


@cache
def database() -> Database:
    return settings.consumer.database("unlocking")


def unlock(request: dict[str, Any], _: Delivery) -> dict[str, Any]:
    return unlock_run(request, db=database(), respecs=settings.respecs)


lambda_handler = task_lambda_handler(
    TaskKind("unlocking-request", "unlocking-result", Step.UNLOCK, unlock),
    database=database,
    settings=settings.consumer,
)
