"""Validation: decide whether a run goes ahead, check its source, freeze its window, and take
the source's lock.

`decide` is pure. `validate_run` applies its decision in one transaction, keyed on the
execution ARN so that a redelivered message returns the first decision instead of counting
the run twice. Before that transaction it checks the connection of a source that is going to
run (its settings, its secret, that it answers and accepts the credentials), so that a
misconfigured source fails by name before anything is locked or counted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.validation import adapters
from services.validation.approval import approval_required
from shared.connectors import require_supported
from shared.errors import PermanentError
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
from shared.rules.respecs import check_respecs_query
from shared.store.db import Database
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


def validate_run(
    request: Mapping[str, Any],
    *,
    db: Database,
    clock: Callable[[], datetime],
    lease: timedelta,
    respecs_tables: frozenset[str],
    check_connection: Callable[[str, str, Any], None],
    approval_gate: bool,
) -> dict[str, Any]:
    """Decide and record; returns the fields of a validation-result message."""
    execution_arn, source_id = request["execution_arn"], request["source_id"]

    def decide_on(row: Mapping[str, Any] | None) -> Skip | Run:
        return decide(
            SourceRow(**row) if row else None,
            source_id=source_id,
            execution_arn=execution_arn,
            now=clock(),
            lease=lease,
            respecs_tables=respecs_tables,
        )

    with db.transaction() as cur:
        recorded = adapters.find_run(cur, execution_arn)
        row = None if recorded else adapters.read_source_row(cur, source_id)
    if recorded is None and isinstance(decide_on(row), Run):
        assert row is not None
        # Outside any transaction: no row lock is held while a remote source takes its time.
        # A PermanentError here changes nothing of the source; the task handler records it.
        check_connection(source_id, row["source_type"], row["connection"])

    with db.transaction() as cur:
        # Lock the source row before looking for a recorded decision: a duplicate delivered at
        # the same moment waits here and then finds the first delivery's committed run.
        row = adapters.read_source_row(cur, source_id, for_update=True)
        recorded = adapters.find_run(cur, execution_arn)
        if recorded is None:
            # A PermanentError here rolls back: nothing of the source changes, and the task
            # handler records the failure in the ledger and reports it.
            outcome = decide_on(row)
            if isinstance(outcome, Skip):
                adapters.record_skip(cur, request, outcome)
            else:
                adapters.start_run(cur, request, outcome)
            recorded = adapters.find_run(cur, execution_arn)
        assert recorded is not None
        fields = adapters.result_fields(recorded)
        if fields["decision"] == "run":
            fields["approval_required"] = approval_required(cur, recorded, gate_on=approval_gate)
    return fields
