"""Scheduler Lambda: schedule ticks, run requests, run ends, flow reset requests (its queue)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache, partial
from typing import Any

from services.scheduler import service
from services.scheduler.adapters import ExecutionStarter
from services.scheduler.settings import Settings
from shared.runtime import aws
from shared.runtime.catalogue import RUNS_MAY_START_AFTER, SCHEDULED_EVENT, DetailType
from shared.runtime.events import EventPublisher, event_lambda_handler
from shared.store.db import Database

settings = Settings.from_env()


@cache
def database() -> Database:
    return settings.consumer.database("scheduler")


@cache
def admitter() -> service.Admit:
    starter = ExecutionStarter(aws.client("stepfunctions"), settings.state_machine_arn)
    return partial(service.admit, db=database(), start_run=starter, admission=settings.admission)


@cache
def publisher() -> EventPublisher:
    return EventPublisher(aws.client("events"), settings.event_bus_name)


def on_tick(event: dict[str, Any]) -> None:
    start = partial(service.start_due_workflows, db=database(), sfn=aws.client("stepfunctions"))
    service.tick(event, db=database(), admit=admitter(), publish=publisher(), start_workflows=start)


def on_run_requested_or_ended(event: dict[str, Any]) -> None:
    service.start_runs(event, db=database(), admit=admitter())


def on_flow_reset_requested(event: dict[str, Any]) -> None:
    service.reset_flow(event, db=database(), publish=publisher(), now=datetime.now(UTC))


lambda_handler = event_lambda_handler(
    {
        SCHEDULED_EVENT: on_tick,
        **dict.fromkeys(RUNS_MAY_START_AFTER, on_run_requested_or_ended),
        DetailType.FLOW_RESET_REQUESTED: on_flow_reset_requested,
    },
    database=database,
    settings=settings.consumer,
)
