"""Validation's decision, pure: whether a run goes ahead, and with which flow, window, count
and lease (`decide`), from the source's row, the time, the allowed Re-specs tables and, for an
execution started for a backfill's slice, that slice; for one started to redrive a failed run
(`sourceflow redrive`), that run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.connectors.base import require_supported
from shared.errors import PermanentError, RunCancelled
from shared.rules.backfills import BackfillStatus, SliceRun
from shared.rules.flows import (
    DEFAULT_LATENESS_ALLOWANCE,
    FIRST_RUN_PARAMS,
    FlowParams,
    FlowType,
    Window,
    check_lateness_allowance,
    is_first_run,
    parse_flow_params,
    plan_window,
)
from shared.rules.leases import lease_is_live
from shared.rules.redrives import RedrivenRun
from shared.rules.respecs import check_respecs_query
from shared.timefmt import isoformat


class SourceNotFound(PermanentError):
    error_name = "SourceNotFound"


@dataclass(frozen=True)
class SourceRow:
    source_id: str
    source_type: str
    connection: Any
    is_active: bool
    batch_execution_params: Mapping[str, Any] | None
    last_modified_date: datetime | None
    runtime_count: int
    backdate_days: int
    locked_by: str | None
    lock_expires_at: datetime | None
    lateness_allowance: timedelta = DEFAULT_LATENESS_ALLOWANCE
    landed_since: datetime | None = None


@dataclass(frozen=True)
class Skip:
    reason: str  # SourceLocked | SourceInactive
    detail: str


@dataclass(frozen=True)
class Run:
    params: FlowParams
    window: Window
    runtime_count: int
    lock_expires_at: datetime
    # The first-run rule rewrites the source's params; None leaves them as they are.
    params_to_write: Mapping[str, Any] | None


def decide(
    source: SourceRow | None,
    *,
    source_id: str,
    execution_arn: str,
    now: datetime,
    lease: timedelta,
    respecs_tables: frozenset[str],
    backfill: SliceRun | None = None,
    redrive: RedrivenRun | None = None,
) -> Skip | Run:
    if source is None:
        raise SourceNotFound(
            f"source {source_id!r} does not exist in public.source; register it or fix the "
            "execution input"
        )
    if not source.is_active:
        return Skip("SourceInactive", f"source {source_id!r} is inactive (is_active = false)")
    if source.locked_by != execution_arn and lease_is_live(
        source.locked_by, source.lock_expires_at, now
    ):
        assert source.lock_expires_at is not None  # a live lease has an expiry
        return Skip(
            "SourceLocked",
            f"source {source_id!r} is locked by {source.locked_by} until "
            f"{isoformat(source.lock_expires_at)}",
        )
    require_supported(source_id, source.source_type)
    if backfill is not None:
        return _backfill_run(source, backfill, now + lease)
    if redrive is not None:
        return _redriven_run(source, redrive, now + lease, respecs_tables)
    params = parse_flow_params(source_id, source.batch_execution_params)
    if params.flow_type is FlowType.RESPECS:
        # Refuse a bad query before anything is locked or downloaded.
        assert params.sql is not None
        check_respecs_query(source_id, params.sql, respecs_tables)
    runtime_count = source.runtime_count + 1
    params_to_write = None
    if is_first_run(runtime_count):
        params_to_write = FIRST_RUN_PARAMS
        params = parse_flow_params(source_id, FIRST_RUN_PARAMS)
    window = plan_window(
        source_id,
        params,
        cursor=source.last_modified_date,
        run_start=now,
        backdate_days=source.backdate_days,
        lateness_allowance=check_lateness_allowance(source_id, source.lateness_allowance),
        landed_since=source.landed_since,
    )
    return Run(params, window, runtime_count, now + lease, params_to_write)


def _redriven_run(
    source: SourceRow, redrive: RedrivenRun, lock_expires: datetime, respecs_tables: frozenset[str]
) -> Run:
    """A redrive's new run loads the failed run's window with the failed run's flow, whatever
    the source's params say now (a Re-specs query is checked again, and asks for a person's
    approval again); it counts as a run, and the first-run rule has had its turn."""
    if redrive.params.flow_type is FlowType.RESPECS:
        assert redrive.params.sql is not None
        check_respecs_query(source.source_id, redrive.params.sql, respecs_tables)
    return Run(
        redrive.params,
        redrive.window,
        source.runtime_count + 1,
        lock_expires,
        params_to_write=None,
    )


def _backfill_run(source: SourceRow, backfill: SliceRun, lock_expires_at: datetime) -> Run:
    """A backfill's slice loads its own window and leaves the source's params and runtime
    count alone (they belong to the Normal timeline: the first-run rule counts its runs)."""
    if backfill.status is not BackfillStatus.ACTIVE:
        raise RunCancelled(
            f"backfill {backfill.backfill_id} of source {source.source_id!r} is "
            f"{backfill.status.value}: its slice {backfill.slice_number} does not run"
        )
    return Run(
        FlowParams(FlowType.BACKFILL),
        backfill.window,
        source.runtime_count,
        lock_expires_at,
        params_to_write=None,
    )
