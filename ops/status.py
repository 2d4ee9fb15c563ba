"""`sourceflow status`: queue and DLQ depths, running executions, runs waiting for admission,
locks and expired leases, the last tick, what waits for a person's approval, and the runs that
failed lately.

Each part is asked on its own (SQS, Step Functions, the database), briefly, so that one that
is down shows as unreachable, with why, beside what the others say: the queues when the
database is down, and the reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from infra.resources import SERVICES
from ops.approvals import list_waiting
from ops.config import OperatorConfig
from ops.runs import runs_list
from shared.errors import SourceflowError
from shared.rules.backfills import BackfillStatus
from shared.store.admission import line_length
from shared.store.db import Database
from shared.store.runs import RunStatus

# Status asks each part once, and soon says it is unreachable rather than retrying for long.
_BRIEF = Config(
    connect_timeout=3, read_timeout=10, retries={"mode": "standard", "total_max_attempts": 2}
)
# The runs that count as recent failures, and how many are shown.
RECENT = timedelta(hours=24)
RECENT_FAILURES_SHOWN = 20
_DOWN = (SourceflowError, psycopg2.Error, BotoCoreError, ClientError)


def status(config: OperatorConfig, *, now: datetime | None = None) -> dict[str, Any]:
    """The report, with `unreachable`: each part that did not answer, and why (one line)."""
    now = now or datetime.now(UTC)
    # Each part, what it gives the report (None for each when it cannot be reached), and how.
    parts: list[tuple[str, tuple[str, ...], Callable[[], dict[str, Any]]]] = [
        ("SQS", ("queues",), lambda: {"queues": queues(config)}),
        ("Step Functions", ("running",), lambda: {"running": running(config)}),
        (
            "the database",
            (
                "waiting_for_admission",
                "locked",
                "scheduler_ticks",
                "pending_approvals",
                "recent_failures",
            ),
            lambda: from_database(config, now),
        ),
    ]
    report: dict[str, Any] = {}
    unreachable = []
    for part, gives, ask in parts:
        try:
            report.update(ask())
        except _DOWN as exc:
            report.update(dict.fromkeys(gives))
            unreachable.append({"part": part, "error": _first_line(exc)})
    return {**report, "unreachable": unreachable}


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def queues(config: OperatorConfig) -> list[dict[str, Any]]:
    sqs, names = config.client("sqs", config=_BRIEF), config.names
    rows = []
    for service in SERVICES:
        queued, in_flight = _depths(
            sqs,
            names.queue(service),
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        )
        (dead_letters,) = _depths(sqs, names.dlq(service), "ApproximateNumberOfMessages")
        rows.append(
            {
                "service": service,
                "queued": queued,
                "in_flight": in_flight,
                "dead_letters": dead_letters,
            }
        )
    return rows


def running(config: OperatorConfig) -> list[dict[str, Any]]:
    sfn = config.client("stepfunctions", config=_BRIEF)
    return [
        {"execution_name": execution["name"], "started": execution["startDate"]}
        for page in sfn.get_paginator("list_executions").paginate(
            stateMachineArn=config.require("STATE_MACHINE_ARN"), statusFilter="RUNNING"
        )
        for execution in page["executions"]
    ]


def from_database(config: OperatorConfig, now: datetime) -> dict[str, Any]:
    db = Database(config.database_url(), application_name="sourceflow-operator")
    try:
        with db.transaction() as cur:
            cur.execute(
                """
                SELECT source_id, locked_by, lock_expires_at,
                       lock_expires_at < now() AS lease_expired
                  FROM public.source WHERE locked_by IS NOT NULL ORDER BY source_id
                """
            )
            locked = [dict(row) for row in cur.fetchall()]
            cur.execute("SELECT rule, last_tick_at, handled_at FROM public.scheduler_tick")
            ticks = [dict(row) for row in cur.fetchall()]
            cur.execute(
                """
                SELECT backfill_id, source_id, requested_by, requested_at
                  FROM public.backfill WHERE status = %s ORDER BY requested_at
                """,
                (BackfillStatus.AWAITING_APPROVAL.value,),
            )
            backfills = [dict(row) for row in cur.fetchall()]
            waiting = line_length(cur)
        failures = runs_list(
            db, status=RunStatus.FAILED, since=now - RECENT, limit=RECENT_FAILURES_SHOWN
        )
        return {
            "waiting_for_admission": waiting,
            "locked": locked,
            "scheduler_ticks": ticks,
            "pending_approvals": pending_approvals(list_waiting(db), backfills),
            "recent_failures": [
                {key: run[key] for key in RECENT_FAILURE_FIELDS} for run in failures
            ],
        }
    finally:
        db.close()


RECENT_FAILURE_FIELDS = (
    "execution_name",
    "source_id",
    "flow_type",
    "finished_at",
    "failed_step",
    "error",
)


def pending_approvals(
    queries: list[dict[str, Any]], backfills: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """What waits for a second person, oldest first: Re-specs queries of runs, and backfills;
    each with the command that decides it."""
    waiting = [
        {
            "what": "Re-specs query",
            "id": query["execution_name"],
            "source_id": query["source_id"],
            "requested_by": query["requested_by"],
            "requested_at": query["requested_at"],
            "decide_with": f"sourceflow approve|reject {query['execution_name']}",
        }
        for query in queries
    ] + [
        {
            "what": "backfill",
            "id": str(backfill["backfill_id"]),
            "source_id": backfill["source_id"],
            "requested_by": backfill["requested_by"],
            "requested_at": backfill["requested_at"],
            "decide_with": f"sourceflow backfill approve|reject {backfill['backfill_id']}",
        }
        for backfill in backfills
    ]
    return sorted(waiting, key=lambda row: row["requested_at"])


def _depths(sqs: Any, queue_name: str, *attributes: str) -> tuple[int, ...]:
    """The queue's counts named by `attributes`, in their order, from one request."""
    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(attributes))["Attributes"]
    return tuple(int(found[attribute]) for attribute in attributes)
