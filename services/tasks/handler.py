"""Tasks Lambda: a workflow's task requests, and the ends of the runs its ingest tasks wait for."""

from __future__ import annotations

from functools import cache
from typing import Any

from services.tasks.service import Ports, do_task, failure_recorder, on_run_ended
from services.tasks.settings import Settings
from shared.runtime.catalogue import RUN_ENDS
from shared.runtime.deliveries import Delivery
from shared.runtime.tasks import TaskKind, task_lambda_handler
from shared.store.db import Database

settings = Settings.from_env()


@cache
def database() -> Database:
    return settings.consumer.database("tasks")


@cache
def ports() -> Ports:
    return Ports.of(settings, database())


def work(request: dict[str, Any], _: Delivery) -> dict[str, Any] | None:
    return do_task(request, ports())


def run_ended(event: dict[str, Any]) -> None:
    on_run_ended(event, db=database(), callbacks=ports().callbacks)


lambda_handler = task_lambda_handler(
    TaskKind("workflow-task-request", "workflow-task-result", "Workflow", work, failure_recorder),
    database=database,
    settings=settings.consumer,
    events=dict.fromkeys(RUN_ENDS, run_ended),
)
