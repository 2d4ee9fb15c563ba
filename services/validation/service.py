"""Validation's orchestration of one message: decide (services.validation.domain), check the
source, freeze the window and take the source's lock.

`validate_run` applies its decision in one transaction, keyed on the
execution ARN so that a redelivered message returns the first decision instead of counting
the run twice. Before that transaction it checks the connection of a source that is going to
run (its settings, its secret, that it answers and accepts the credentials), so that a
misconfigured source fails by name before anything is locked or counted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from services.validation import adapters
from services.validation.approval import approval_required
from services.validation.domain import Run, Skip, SourceRow, decide
from shared.store import backfills, redrives
from shared.store.db import Database
from shared.timefmt import utc_now


def validate_run(
    request: Mapping[str, Any],
    *,
    db: Database,
    lease: timedelta,
    respecs_tables: frozenset[str],
    approval_gate: bool,
    check_connection: Callable[[str, str, Any], None],
    clock: Callable[[], datetime] = utc_now,
) -> dict[str, Any]:
    """Decide and record; returns the fields of a validation-result message."""
    execution_arn, source_id = request["execution_arn"], request["source_id"]

    def decide_on(cur: Any, row: Mapping[str, Any] | None) -> Skip | Run:
        return decide(
            SourceRow(**row) if row else None,
            source_id=source_id,
            execution_arn=execution_arn,
            now=clock(),
            lease=lease,
            respecs_tables=respecs_tables,
            backfill=backfills.slice_of_execution(cur, request["execution_name"]),
            redrive=redrives.run_to_redrive(cur, request["execution_name"]),
        )

    with db.transaction() as cur:
        recorded = adapters.find_run(cur, execution_arn)
        row = None if recorded else adapters.read_source_row(cur, source_id)
        first_decision = None if recorded else decide_on(cur, row)
    if isinstance(first_decision, Run):
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
            outcome = decide_on(cur, row)
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
