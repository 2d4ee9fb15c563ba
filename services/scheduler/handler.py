"""Scheduler Lambda: schedule ticks, run requests and flow reset requests from its queue."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from services.scheduler.adapters import ExecutionStarter
from services.scheduler.logic import (
    apply_reset,
    dispatch,
    record_tick,
    request_resets,
    start_requested_run,
)
from services.scheduler.settings import Settings
from shared.runtime import aws
from shared.runtime.catalogue import SCHEDULED_EVENT, DetailType
from shared.runtime.events import EventPublisher, event_lambda_handler
from shared.store.db import Database
from shared.timefmt import parse_iso

settings = Settings.from_env()


@cache
def database() -> Database:
    return Database(settings.consumer.database_url, application_name="sourceflow-scheduler")


@cache
def starter() -> ExecutionStarter:
    return ExecutionStarter(aws.client("stepfunctions"), settings.state_machine_arn)


@cache
def publisher() -> EventPublisher:
    return EventPublisher(aws.client("events"), settings.event_bus_name)


def on_tick(event: dict[str, Any]) -> None:
    # The tick's own time names the slots, so a redelivered tick decides the same way.
    now = parse_iso(event["time"])
    record_tick(event, now, db=database())
    dispatch(now, db=database(), start_run=starter())
    request_resets(now, db=database(), publish=publisher())


def on_run_requested(event: dict[str, Any]) -> None:
    start_requested_run(event, start_run=starter())


def on_flow_reset_requested(event: dict[str, Any]) -> None:
    applied = apply_reset(event, db=database(), now=datetime.now(UTC))
    if applied is not None:
        publisher()(DetailType.FLOW_RESET_APPLIED, applied)


lambda_handler = event_lambda_handler(
    {
        SCHEDULED_EVENT: on_tick,
        DetailType.RUN_REQUESTED: on_run_requested,
        DetailType.FLOW_RESET_REQUESTED: on_flow_reset_requested,
    },
    database=database,
    settings=settings.consumer,
)
