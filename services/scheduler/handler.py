"""Scheduler Lambda: schedule ticks, run requests, run ends and flow reset requests from its
queue."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache, partial
from typing import Any

from services.scheduler.adapters import ExecutionStarter
from services.scheduler.service import Admit, admit, reset_flow, start_runs, tick
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
def admitter() -> Admit:
    starter = ExecutionStarter(aws.client("stepfunctions"), settings.state_machine_arn)
    return partial(admit, db=database(), start_run=starter, admission=settings.admission)


@cache
def publisher() -> EventPublisher:
    return EventPublisher(aws.client("events"), settings.event_bus_name)


def on_tick(event: dict[str, Any]) -> None:
    tick(event, db=database(), admit=admitter(), publish=publisher())


def on_run_requested_or_ended(event: dict[str, Any]) -> None:
    start_runs(event, db=database(), admit=admitter())


def on_flow_reset_requested(event: dict[str, Any]) -> None:
    reset_flow(event, db=database(), publish=publisher(), now=datetime.now(UTC))


lambda_handler = event_lambda_handler(
    {
        SCHEDULED_EVENT: on_tick,
        **dict.fromkeys(RUNS_MAY_START_AFTER, on_run_requested_or_ended),
        DetailType.FLOW_RESET_REQUESTED: on_flow_reset_requested,
    },
    database=database,
    settings=settings.consumer,
)
