"""Which run redrove which (`public.run_redrive`, migration 0023): written by `sourceflow
redrive` (ops/redrives.py), read by `runs show` and by validation, which runs a redrive's new
run over the failed run's window and flow (services/validation/domain.py). The functions take
the caller's cursor."""

from __future__ import annotations

from typing import Any

from shared.rules.flows import Window, WindowField, parse_flow_params
from shared.rules.redrives import RedriveHow, RedrivenRun
from shared.store.db import fetch_one


def record(cur: Any, failed_execution_arn: str, redrive_name: str, how: RedriveHow) -> bool:
    """Record the redrive; False when the run was redriven already (a run is redriven once)."""
    cur.execute(
        """
        INSERT INTO public.run_redrive (failed_execution_arn, redrive_execution_name, how)
        VALUES (%s, %s, %s)
        ON CONFLICT (failed_execution_arn) DO NOTHING
        """,
        (failed_execution_arn, redrive_name, how.value),
    )
    return bool(cur.rowcount)


def redrive_of(cur: Any, failed_execution_arn: str) -> dict[str, Any] | None:
    """How, by whom and as which execution the failed run was redriven, if it was."""
    return fetch_one(
        cur,
        "SELECT redrive_execution_name, how, redriven_by, redriven_at FROM public.run_redrive"
        " WHERE failed_execution_arn = %s",
        (failed_execution_arn,),
    )


def redriven_run(cur: Any, execution_name: str) -> dict[str, Any] | None:
    """The failed run a new run redrives (its name, and who redrove it), if it redrives one."""
    return fetch_one(
        cur,
        """
        SELECT r.execution_name AS failed_run, d.redriven_by, d.redriven_at
          FROM public.run_redrive d
          JOIN public.source_run r ON r.execution_arn = d.failed_execution_arn
         WHERE d.redrive_execution_name = %s AND d.how = %s
        """,
        (execution_name, RedriveHow.NEW_RUN.value),
    )


def run_to_redrive(cur: Any, execution_name: str) -> RedrivenRun | None:
    """For a new run started by a redrive, the run it redrives; None for any other run."""
    row = fetch_one(
        cur,
        """
        SELECT r.execution_name, r.source_id, r.flow_params, r.window_field,
               r.window_start, r.window_end, r.window_start_inclusive
          FROM public.run_redrive d
          JOIN public.source_run r ON r.execution_arn = d.failed_execution_arn
         WHERE d.redrive_execution_name = %s AND d.how = %s
        """,
        (execution_name, RedriveHow.NEW_RUN.value),
    )
    if row is None:
        return None
    params = parse_flow_params(row["source_id"], row["flow_params"])
    window = Window(
        WindowField(row["window_field"]),
        row["window_start"],
        row["window_end"],
        row["window_start_inclusive"],
    )
    return RedrivenRun(row["execution_name"], params, window)
