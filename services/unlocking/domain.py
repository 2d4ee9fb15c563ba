"""Unlocking's decisions, pure: whether a run's execution holds the source's lock
(`holds_lock`), whether a run reported as succeeded may end that way (`check_success`), and
where its success leaves the source's cursor and its landed-version mark (`cursor_move`).

They read the run's ledger row and the source's row as the service locked them; the writes
are the service's (services.unlocking.service).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.errors import LockLost, PermanentError
from shared.rules.flows import (
    FlowType,
    advance_cursor,
    landed_since_after,
    moves_cursor,
    recorded_allowance,
)
from shared.store.runs import RunStatus


class RunNotDownloaded(PermanentError):
    error_name = "RunNotDownloaded"


def holds_lock(source: Mapping[str, Any] | None, execution_arn: str) -> bool:
    return source is not None and source["locked_by"] == execution_arn


def check_success(
    run: Mapping[str, Any] | None,
    source: Mapping[str, Any] | None,
    *,
    source_id: str,
    execution_arn: str,
) -> None:
    """A success moves the cursor only for a downloaded run whose execution holds the lock."""
    if run is None or run["status"] != RunStatus.DOWNLOADED:
        raise RunNotDownloaded(
            f"execution {execution_arn} reported success but its run is "
            f"{run['status'] if run else 'missing'!r} in the ledger, not 'downloaded'"
        )
    if not holds_lock(source, execution_arn):
        raise LockLost(
            f"source {source_id!r} is locked by {source['locked_by'] if source else None}, "
            f"not by {execution_arn}; the cursor is not moved"
        )


@dataclass(frozen=True)
class CursorMove:
    """Where a succeeded run leaves the source's LMD cursor (`before` → `after`) and from which
    stamp on the landed versions stay listed. A flow that does not move the cursor (Sold)
    leaves both alone: `moves` is False and `after` is `before`."""

    before: datetime | None
    after: datetime | None
    moves: bool
    landed_since: datetime | None


def cursor_move(run: Mapping[str, Any], source: Mapping[str, Any]) -> CursorMove:
    """From the run's ledger row (its flow, newest stamp loaded and allowance) and the
    source's row (its cursor and landed-version mark)."""
    before = source["last_modified_date"]
    if not moves_cursor(FlowType(run["flow_type"])):
        return CursorMove(before, before, moves=False, landed_since=source["landed_since"])
    after = advance_cursor(before, run["max_last_modified"])
    landed_since = landed_since_after(
        source["landed_since"], after, recorded_allowance(run["lateness_allowance"])
    )
    return CursorMove(before, after, moves=True, landed_since=landed_since)
