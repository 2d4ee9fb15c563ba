"""The tasks service's SQL and its other ports: the workflow task ledger (migration 0022), the
child runs it reads, a sql task's target database, and SNS."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import closing
from datetime import timedelta
from typing import Any

import psycopg2
import psycopg2.errors
from botocore.exceptions import BotoCoreError, ClientError
from psycopg2.extras import Json

from services.tasks.domain import RUNNING, Answer, TaskFailed
from shared.errors import TransientError, bounded_line
from shared.store.db import SERVER_MESSAGE_CHARS, fetch_one, query_at_fault

# -- the workflow task ledger --------------------------------------------------------------------


def claim_task(cur: Any, request: Mapping[str, Any]) -> dict[str, Any]:
    """The task's row, inserted running on its first delivery; a later delivery gets the row as
    the first left it (and, still running, with this delivery's token), locked either way."""
    cur.execute(
        """
        INSERT INTO public.workflow_task_run
               (workflow_run_id, task, kind, variables_seen, task_token)
        VALUES (%(run)s, %(task)s, %(kind)s, %(variables)s, %(token)s)
        ON CONFLICT (workflow_run_id, task) DO UPDATE SET task_token = EXCLUDED.task_token
         WHERE workflow_task_run.status = %(running)s
        """,
        {
            "run": request["workflow_run_id"],
            "task": request["task"],
            "kind": request["kind"],
            "variables": Json(request["variables"]),
            "token": request["task_token"],
            "running": RUNNING,
        },
    )
    row = lock_task(cur, request["workflow_run_id"], request["task"])
    assert row is not None  # inserted or found just now, in this transaction
    return row


def lock_task(cur: Any, run_id: str, task: str) -> dict[str, Any] | None:
    return fetch_one(
        cur,
        "SELECT * FROM public.workflow_task_run WHERE workflow_run_id = %s AND task = %s"
        " FOR UPDATE",
        (run_id, task),
    )


def claim_child_request(cur: Any, run_id: str, task: str, window: timedelta) -> bool:
    """Whether this delivery may ask for the task's child run: none is recorded, and no other
    delivery claimed the asking within `window`."""
    return (
        fetch_one(
            cur,
            """
            UPDATE public.workflow_task_run SET child_claimed_at = now()
             WHERE workflow_run_id = %(run)s AND task = %(task)s AND child_run_id IS NULL
               AND (child_claimed_at IS NULL OR child_claimed_at < now() - %(window)s)
            RETURNING task
            """,
            {"run": run_id, "task": task, "window": window},
        )
        is not None
    )


def release_child_claim(cur: Any, run_id: str, task: str) -> None:
    cur.execute(
        "UPDATE public.workflow_task_run SET child_claimed_at = NULL"
        " WHERE workflow_run_id = %s AND task = %s AND child_run_id IS NULL",
        (run_id, task),
    )


def set_child(cur: Any, run_id: str, task: str, child_run_id: str) -> None:
    cur.execute(
        "UPDATE public.workflow_task_run SET child_run_id = %s"
        " WHERE workflow_run_id = %s AND task = %s",
        (child_run_id, run_id, task),
    )


def waiting_for(cur: Any, child_run_id: str) -> dict[str, Any] | None:
    """The running ingest task waiting for this child run, locked; None when none is."""
    return fetch_one(
        cur,
        "SELECT * FROM public.workflow_task_run WHERE child_run_id = %s AND status = %s FOR UPDATE",
        (child_run_id, RUNNING),
    )


def children_waited_for(cur: Any, source_id: str) -> list[str]:
    """The child runs of this source that running ingest tasks wait for."""
    cur.execute(
        """
        SELECT t.child_run_id FROM public.workflow_task_run t
          JOIN public.run_request r ON r.execution_name = t.child_run_id
         WHERE r.source_id = %s AND t.status = %s
        """,
        (source_id, RUNNING),
    )
    return [row["child_run_id"] for row in cur.fetchall()]


def end_task(cur: Any, run_id: str, task: str, answer: Answer) -> None:
    """Record the task's end; a task already ended keeps its first end."""
    cur.execute(
        """
        UPDATE public.workflow_task_run
           SET status = %(status)s, output = %(output)s, error = %(error)s, ended_at = now()
         WHERE workflow_run_id = %(run)s AND task = %(task)s AND status = %(running)s
        """,
        {
            "run": run_id,
            "task": task,
            "status": answer.status,
            "output": Json({"variables": answer.variables, "detail": answer.detail}),
            "error": answer.error,
            "running": RUNNING,
        },
    )


def record_skipped(cur: Any, run_id: str, tasks: list[str]) -> None:
    """The tasks the machine skipped (their edges did not hold), for `workflow show`."""
    for task in tasks:
        cur.execute(
            """
            INSERT INTO public.workflow_task_run
                   (workflow_run_id, task, kind, status, started_at, ended_at)
            VALUES (%s, %s, NULL, 'skipped', now(), now())
            ON CONFLICT (workflow_run_id, task) DO NOTHING
            """,
            (run_id, task),
        )


def task_errors(cur: Any, run_id: str) -> dict[str, str]:
    cur.execute(
        "SELECT task, error FROM public.workflow_task_run"
        " WHERE workflow_run_id = %s AND error IS NOT NULL",
        (run_id,),
    )
    return {row["task"]: row["error"] for row in cur.fetchall()}


def end_workflow_run(cur: Any, run_id: str, status: str) -> bool | None:
    """Record the workflow run's end once; returns whether this call ended it (a duplicate
    finish finds it ended and publishes nothing again), None when no run has this id."""
    found = fetch_one(
        cur,
        """
        SELECT (r.ended_at IS NULL) AS open FROM public.workflow_run r WHERE r.id = %s
           FOR UPDATE
        """,
        (run_id,),
    )
    if found is None or not found["open"]:
        return None if found is None else False
    cur.execute(
        "UPDATE public.workflow_run SET status = %s, ended_at = now() WHERE id = %s",
        (status, run_id),
    )
    return True


def child_run(cur: Any, execution_name: str) -> dict[str, Any] | None:
    return fetch_one(
        cur, "SELECT * FROM public.source_run WHERE execution_name = %s", (execution_name,)
    )


def lock_source_params(cur: Any, source_id: str) -> dict[str, Any] | None:
    return fetch_one(
        cur,
        "SELECT batch_execution_params, is_active, deleted_at FROM public.source"
        " WHERE source_id = %s"
        " FOR UPDATE",
        (source_id,),
    )


# -- a sql task's target ---------------------------------------------------------------------------


def first_value(
    dsn: str, query: str, parameters: Mapping[str, Any], *, statement_timeout_ms: int
) -> tuple[bool, Any]:
    """Run the query in a transaction of its own on the target, its parameters bound by the
    driver and its time bounded as a Re-specs query's is; returns (whether a row came back,
    its first column). A query at fault fails the task; the connection or the server being
    unavailable is transient."""
    try:
        connection = psycopg2.connect(
            dsn, connect_timeout=10, application_name="sourceflow-tasks-sql"
        )
        with closing(connection) as conn, conn.cursor() as cur:
            cur.execute("SET LOCAL statement_timeout = %s", (f"{statement_timeout_ms}ms",))
            cur.execute(query, dict(parameters))
            row = cur.fetchone() if cur.description is not None else None
            conn.commit()
    except psycopg2.errors.QueryCanceled as exc:
        raise TaskFailed(
            f"the query ran longer than {statement_timeout_ms} ms and was cancelled; narrow it "
            "or raise SQL_TASK_STATEMENT_TIMEOUT_MS"
        ) from exc
    except psycopg2.Error as exc:
        if not query_at_fault(exc.pgcode):
            raise TransientError(f"the sql target is unavailable: {type(exc).__name__}") from exc
        message = bounded_line(exc.diag.message_primary or str(exc), SERVER_MESSAGE_CHARS)
        raise TaskFailed(
            f"the query failed in PostgreSQL (SQLSTATE {exc.pgcode}): {message}"
        ) from exc
    return (row is not None, row[0] if row else None)


# -- SNS -------------------------------------------------------------------------------------------


class Topic:
    """One SNS topic to publish to (the notifications topic, the alerts topic)."""

    def __init__(self, sns_client: Any, topic_arn: str) -> None:
        self._sns, self._arn = sns_client, topic_arn

    def __call__(self, subject: str, message: str) -> str:
        try:
            response = self._sns.publish(TopicArn=self._arn, Subject=subject[:100], Message=message)
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"cannot publish to {self._arn}: {exc}") from exc
        return str(response["MessageId"])
