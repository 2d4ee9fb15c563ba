"""Workflows in the ledger (migration 0021): their versions, the current one and its schedule,
and their runs; and starting a run, which the operator's `workflow run` and the scheduler's tick
both do the same way (`start_run`).

A run is started by name, its execution's, so that a start repeated after a failure (a tick
redelivered, a commit lost) meets the execution already there and records it once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import TransientError
from shared.rules.workflows import run_name
from shared.runtime.aws import error_code
from shared.runtime.executions import execution_arn
from shared.store.db import fetch_one

# The lock two applies of workflows take in turn (a transaction-scoped advisory lock): the rows
# of workflows not yet added cannot be locked, and two applies adding one would both try.
_APPLY_LOCK = "sourceflow: apply workflows"


def lock_workflows(cur: Any) -> list[dict[str, Any]]:
    """Every workflow with its current version's definition and hash, locked for an apply:
    a second apply waits for this one's transaction to end."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_APPLY_LOCK,))
    cur.execute(
        """
        SELECT w.name, w.current_version, w.enabled, v.definition, v.definition_hash
          FROM public.workflow w
          JOIN public.workflow_version v
            ON v.workflow = w.name AND v.version = w.current_version
         ORDER BY w.name
           FOR UPDATE OF w
        """
    )
    return [dict(row) for row in cur.fetchall()]


def add_version(
    cur: Any,
    name: str,
    version: int,
    definition: Mapping[str, Any],
    definition_hash: str,
    state_machine_arn: str,
) -> None:
    cur.execute(
        """
        INSERT INTO public.workflow_version
               (workflow, version, definition, definition_hash, state_machine_arn)
        VALUES (%s, %s, %s, %s, %s)
        """,
        (name, version, json.dumps(definition), definition_hash, state_machine_arn),
    )


def make_current(
    cur: Any,
    name: str,
    version: int,
    schedule_interval: timedelta | None,
    schedule_cron: str | None,
    slot_taken: datetime | None,
) -> None:
    """The workflow's current version (and its schedule) is `version`; enabled, its schedule's
    slots up to `slot_taken` counted as started (shared/rules/workflows.py slot_taken_at)."""
    cur.execute(
        """
        INSERT INTO public.workflow
               (name, current_version, schedule_interval, schedule_cron, last_scheduled_slot)
        VALUES (%(name)s, %(version)s, %(interval)s, %(cron)s, %(slot)s)
        ON CONFLICT (name) DO UPDATE
           SET current_version = EXCLUDED.current_version,
               schedule_interval = EXCLUDED.schedule_interval,
               schedule_cron = EXCLUDED.schedule_cron,
               last_scheduled_slot = GREATEST(public.workflow.last_scheduled_slot,
                                              EXCLUDED.last_scheduled_slot),
               enabled = true,
               updated_at = now()
        """,
        {
            "name": name,
            "version": version,
            "interval": schedule_interval,
            "cron": schedule_cron,
            "slot": slot_taken,
        },
    )


def set_enabled(cur: Any, name: str, enabled: bool, slot_taken: datetime | None = None) -> None:
    """Disable the workflow, or enable it with its slots up to `slot_taken` counted as
    started (the slots it missed while disabled are not made up)."""
    cur.execute(
        """
        UPDATE public.workflow
           SET enabled = %s, updated_at = now(),
               last_scheduled_slot = GREATEST(last_scheduled_slot, %s)
         WHERE name = %s
        """,
        (enabled, slot_taken, name),
    )


def current(cur: Any, name: str) -> dict[str, Any] | None:
    """A workflow's row with its current version's definition and state machine."""
    return fetch_one(
        cur,
        """
        SELECT w.name, w.current_version AS version, w.enabled, v.definition,
               v.state_machine_arn
          FROM public.workflow w
          JOIN public.workflow_version v
            ON v.workflow = w.name AND v.version = w.current_version
         WHERE w.name = %s
        """,
        (name,),
    )


def schedulable(cur: Any) -> list[dict[str, Any]]:
    """The enabled workflows with a schedule, for the scheduler's tick."""
    cur.execute(
        """
        SELECT name, schedule_interval, schedule_cron, last_scheduled_slot
          FROM public.workflow
         WHERE enabled AND (schedule_interval IS NOT NULL OR schedule_cron IS NOT NULL)
         ORDER BY name
        """
    )
    return [dict(row) for row in cur.fetchall()]


def claim_slot(cur: Any, name: str, slot: datetime) -> bool:
    """Take the slot for this workflow, unless a run was already started for it or a later
    one; the row stays locked until the transaction ends."""
    cur.execute(
        """
        UPDATE public.workflow SET last_scheduled_slot = %s
         WHERE name = %s AND (last_scheduled_slot IS NULL OR last_scheduled_slot < %s)
        RETURNING name
        """,
        (slot, name, slot),
    )
    return cur.fetchone() is not None


def start_run(
    cur: Any,
    sfn: Any,
    workflow: Mapping[str, Any],
    variables: Mapping[str, Any],
    *,
    started: datetime,
    nonce: str,
) -> str:
    """Start a run of `workflow` (a `current` row) with these variables and record it with its
    version; returns the run's id. Under a name already started (a repeated start), the
    execution there is the run, recorded once."""
    run_id = run_name(workflow["name"], workflow["version"], started, nonce)
    machine = workflow["state_machine_arn"]
    # Recorded first, so that a run the ledger refuses is never started.
    cur.execute(
        """
        INSERT INTO public.workflow_run (id, workflow, version, variables, execution_arn)
        VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (id) DO NOTHING
        """,
        (
            run_id,
            workflow["name"],
            workflow["version"],
            json.dumps(variables),
            execution_arn(machine, run_id),
        ),
    )
    try:
        sfn.start_execution(
            stateMachineArn=machine, name=run_id, input=json.dumps({"variables": variables})
        )
    except ClientError as exc:
        if error_code(exc) != "ExecutionAlreadyExists":
            raise TransientError(f"cannot start workflow {workflow['name']!r}: {exc}") from exc
    except BotoCoreError as exc:
        raise TransientError(f"Step Functions unreachable: {exc}") from exc
    return run_id


def runs(cur: Any, workflow: str | None, limit: int) -> list[dict[str, Any]]:
    """Workflow runs, newest first, each with how many tasks ended how (from 0022's table)."""
    cur.execute(
        """
        SELECT r.id, r.workflow, r.version, r.status, r.requested_by, r.started_at,
               r.ended_at,
               round(EXTRACT(EPOCH FROM r.ended_at - r.started_at)::numeric, 3)::float
                   AS duration_seconds,
               count(t.task) FILTER (WHERE t.status = 'succeeded') AS succeeded,
               count(t.task) FILTER (WHERE t.status = 'failed') AS failed,
               count(t.task) FILTER (WHERE t.status = 'skipped') AS skipped
          FROM public.workflow_run r
          LEFT JOIN public.workflow_task_run t ON t.workflow_run_id = r.id
         WHERE %(workflow)s::text IS NULL OR r.workflow = %(workflow)s
         GROUP BY r.id
         ORDER BY r.started_at DESC, r.id DESC
         LIMIT %(limit)s
        """,
        {"workflow": workflow, "limit": limit},
    )
    return [dict(row) for row in cur.fetchall()]


def run(cur: Any, run_id: str) -> dict[str, Any] | None:
    """One workflow run with its version's definition."""
    return fetch_one(
        cur,
        """
        SELECT r.*, v.definition
          FROM public.workflow_run r
          JOIN public.workflow_version v ON v.workflow = r.workflow AND v.version = r.version
         WHERE r.id = %s
        """,
        (run_id,),
    )


def task_runs(cur: Any, run_id: str) -> list[dict[str, Any]]:
    """What the tasks service recorded of each task of the run (migration 0022)."""
    cur.execute(
        """
        SELECT task, kind, status, variables_seen, output, error, child_run_id, started_at,
               ended_at
          FROM public.workflow_task_run
         WHERE workflow_run_id = %s
         ORDER BY started_at, task
        """,
        (run_id,),
    )
    return [dict(row) for row in cur.fetchall()]


def list_workflows(cur: Any) -> list[dict[str, Any]]:
    cur.execute(
        """
        SELECT w.name, w.current_version AS version, w.enabled, w.schedule_interval,
               w.schedule_cron, last.id AS last_run, last.status AS last_status,
               last.started_at AS last_started_at
          FROM public.workflow w
          LEFT JOIN LATERAL (
                SELECT id, status, started_at FROM public.workflow_run
                 WHERE workflow = w.name ORDER BY started_at DESC, id DESC LIMIT 1
               ) last ON true
         ORDER BY w.name
        """
    )
    return [dict(row) for row in cur.fetchall()]
