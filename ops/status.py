"""`sourceflow status`: queue and DLQ depths, running executions, runs waiting for admission,
locks and expired leases, the last tick."""

from __future__ import annotations

from typing import Any

from infra.resources import SERVICES
from ops.config import OperatorConfig
from shared.store.admission import line_length
from shared.store.db import Database


def status(config: OperatorConfig, db: Database) -> dict[str, Any]:
    sqs, sfn, names = config.client("sqs"), config.client("stepfunctions"), config.names
    queues = []
    for service in SERVICES:
        queued, in_flight = _depths(
            sqs,
            names.queue(service),
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        )
        (dead_letters,) = _depths(sqs, names.dlq(service), "ApproximateNumberOfMessages")
        queues.append(
            {
                "service": service,
                "queued": queued,
                "in_flight": in_flight,
                "dead_letters": dead_letters,
            }
        )
    running = [
        {"execution_name": execution["name"], "started": execution["startDate"]}
        for page in sfn.get_paginator("list_executions").paginate(
            stateMachineArn=config.require("STATE_MACHINE_ARN"), statusFilter="RUNNING"
        )
        for execution in page["executions"]
    ]
    with db.transaction() as cur:
        cur.execute(
            """
            SELECT source_id, locked_by, lock_expires_at, lock_expires_at < now() AS lease_expired
              FROM public.source WHERE locked_by IS NOT NULL ORDER BY source_id
            """
        )
        locked = [dict(row) for row in cur.fetchall()]
        cur.execute("SELECT rule, last_tick_at, handled_at FROM public.scheduler_tick")
        ticks = [dict(row) for row in cur.fetchall()]
        waiting = line_length(cur)
    return {
        "queues": queues,
        "running": running,
        "waiting_for_admission": waiting,
        "locked": locked,
        "scheduler_ticks": ticks,
    }


def _depths(sqs: Any, queue_name: str, *attributes: str) -> tuple[int, ...]:
    """The queue's counts named by `attributes`, in their order, from one request."""
    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(attributes))["Attributes"]
    return tuple(int(found[attribute]) for attribute in attributes)
