"""The scheduler's SQL, and its two AWS calls: start an execution, put an event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from services.scheduler.domain import SliceStart
from shared.errors import TransientError
from shared.rules.flows import FlowType
from shared.runtime.executions import execution_arn, execution_name, start_run
from shared.store import backfills
from shared.store.db import fetch_one
from shared.store.runs import RunStatus


def schedulable_sources(cur: Any) -> list[dict[str, Any]]:
    cur.execute(
        """
        SELECT source_id, schedule_interval, schedule_cron, last_scheduled_slot,
               locked_by, lock_expires_at
          FROM public.source
         WHERE is_active AND (schedule_interval IS NOT NULL OR schedule_cron IS NOT NULL)
        """
    )
    return [dict(row) for row in cur.fetchall()]


def enable_due_sources(cur: Any) -> list[str]:
    """Enable the sources disabled until a time that has passed, through the database's
    function (the scheduler may not change whether a source is active itself); returns them."""
    cur.execute("SELECT public.source_enable_due() AS source_id")
    return [row["source_id"] for row in cur.fetchall()]


def record_tick(cur: Any, rule: str, tick_at: datetime, event_id: str) -> None:
    cur.execute(
        """
        INSERT INTO public.scheduler_tick (rule, last_tick_at, last_event_id)
        VALUES (%s, %s, %s)
        ON CONFLICT (rule) DO UPDATE
           SET last_tick_at = GREATEST(scheduler_tick.last_tick_at, EXCLUDED.last_tick_at),
               last_event_id = EXCLUDED.last_event_id, handled_at = now()
        """,
        (rule, tick_at, event_id),
    )


def claim_slot(cur: Any, source_id: str, slot: datetime) -> bool:
    """Take the slot for this source, unless a run was already started for it or a later one."""
    cur.execute(
        """
        UPDATE public.source SET last_scheduled_slot = %s
         WHERE source_id = %s AND (last_scheduled_slot IS NULL OR last_scheduled_slot < %s)
        """,
        (slot, source_id, slot),
    )
    return bool(cur.rowcount == 1)


def reset_candidates(cur: Any) -> list[dict[str, Any]]:
    """Sources with params, each with its newest successful run of its params' flows (a
    backfill's slice runs beside them: it neither does their job nor hides the run that did)."""
    cur.execute(
        """
        SELECT s.source_id, s.batch_execution_params, s.params_changed_at,
               s.locked_by, s.lock_expires_at,
               r.execution_arn AS last_success_arn, r.flow_params AS last_success_params,
               r.finished_at AS last_success_finished_at
          FROM public.source s
          LEFT JOIN LATERAL (
                SELECT execution_arn, flow_params, finished_at FROM public.source_run
                 WHERE source_id = s.source_id AND status = %s AND flow_type <> %s
                 ORDER BY finished_at DESC LIMIT 1
          ) r ON true
         WHERE s.is_active AND s.batch_execution_params IS NOT NULL
        """,
        (RunStatus.SUCCEEDED, FlowType.BACKFILL),
    )
    return [dict(row) for row in cur.fetchall()]


def record_slice_start(cur: Any, start: SliceStart) -> bool:
    """Record the execution about to start for a backfill's slice; False if a concurrent tick
    recorded this attempt first."""
    return backfills.record_attempt(
        cur,
        backfill_id=start.backfill_id,
        slice_number=start.slice_number,
        attempt=start.attempt,
        execution_name=execution_name(start.source_id, start.started_at, start.nonce),
        started_at=start.started_at,
    )


def change_made_for(cur: Any, request_id: str) -> dict[str, Any] | None:
    return fetch_one(
        cur, "SELECT * FROM public.source_flow_history WHERE request_id = %s", (request_id,)
    )


def lock_source(cur: Any, source_id: str) -> dict[str, Any] | None:
    return fetch_one(
        cur,
        """
        SELECT batch_execution_params, locked_by, lock_expires_at
          FROM public.source WHERE source_id = %s FOR UPDATE
        """,
        (source_id,),
    )


class ExecutionStarter:
    """Starts executions by name; a name already taken means that run was already started."""

    def __init__(self, sfn_client: Any, state_machine_arn: str) -> None:
        self._sfn, self._arn = sfn_client, state_machine_arn

    def __call__(self, source_id: str, started: datetime, nonce: str) -> str:
        try:
            return start_run(self._sfn, self._arn, source_id, started=started, nonce=nonce)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
                return execution_arn(self._arn, execution_name(source_id, started, nonce))
            raise TransientError(f"cannot start a run of {source_id!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"Step Functions unreachable: {exc}") from exc
