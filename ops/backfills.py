"""`sourceflow backfill`: ask for a backfill of a range of a source's past, follow it, decide on
it (README, "Backfills").

A person asks and decides (approve, reject, cancel, retry) through the database's functions, as
their own login: the database records who, and refuses the approval of a backfill by the person
who asked for it. The scheduler starts the slices, one run at a time per source; where a
backfill stands is read from its slices' runs (shared.rules.backfills `progress`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import islice
from typing import Any

from ops.config import OperatorError, unknown_source
from shared.rules.backfills import (
    MAX_SLICES,
    BackfillRange,
    BackfillState,
    BackfillStatus,
    Progress,
    SliceAttempt,
    check_request,
    progress,
)
from shared.store import backfills, runs
from shared.store.approvals import DecisionRefused
from shared.store.db import Database
from shared.store.sources import get_source
from shared.timefmt import isoformat

# What a decision needs the backfill to stand at, beside what the database checks.
_DECIDABLE = {
    "cancelled": (
        BackfillState.AWAITING_APPROVAL,
        BackfillState.READY,
        BackfillState.RUNNING,
        BackfillState.FAILED,
    ),
    "retried": (BackfillState.FAILED,),
}


def request_backfill(
    db: Database, source_id: str, wanted: BackfillRange, *, reason: str, now: datetime
) -> dict[str, Any]:
    """Ask for a backfill as the connected person; returns it as `list_backfills` shows it,
    with the source's backfill_approval_days."""
    source = get_source(db, source_id)
    if source is None:
        raise unknown_source(source_id)
    check_request(source_id, wanted, now=now)
    with db.transaction() as cur:
        try:
            created = backfills.request(cur, source_id, wanted, reason=reason)
        except DecisionRefused as exc:
            raise OperatorError(f"backfill of {source_id!r}: {exc}") from None
    return {**described(created, []), "approval_days": source["backfill_approval_days"]}


def list_backfills(db: Database, *, source_id: str | None, limit: int) -> list[dict[str, Any]]:
    """Backfills, newest first, each with where it stands."""
    with db.transaction() as cur:
        rows = backfills.listed(cur, source_id=source_id, limit=limit)
        attempts = backfills.attempts_of(cur, [row["backfill_id"] for row in rows])
    return [described(row, attempts[row["backfill_id"]]) for row in rows]


def show_backfill(db: Database, backfill_id: int) -> dict[str, Any]:
    """A backfill and each of its slices: window, attempts, its last run and what it loaded."""
    with db.transaction() as cur:
        row = _existing(cur, backfill_id)
        attempts = backfills.attempts_of(cur, [backfill_id])[backfill_id]
        cur.execute(
            "SELECT execution_name, status, records, error FROM public.source_run"
            " WHERE execution_name = ANY(%s)",
            ([attempt.execution_name for attempt in attempts],),
        )
        ledger = {run["execution_name"]: dict(run) for run in cur.fetchall()}
    return {
        "backfill": described(row, attempts),
        "slices": _slices(BackfillRange.of(row), attempts, ledger),
    }


def decide_backfill(
    db: Database, backfill_id: int, decision: str, *, reason: str | None
) -> dict[str, Any]:
    """A person's decision, as their login: `approved` or `rejected` (a backfill awaiting
    approval; never by who asked), `cancelled` (its slice under way is asked to stop too: the
    run ends cancelled, cursor unchanged), `retried` (a failed one: each slice may fail again)."""
    with db.transaction() as cur:
        row = _existing(cur, backfill_id)
        before = _progress(row, backfills.attempts_of(cur, [backfill_id])[backfill_id])
        allowed = _DECIDABLE.get(decision)
        if allowed is not None and before.state not in allowed:
            raise OperatorError(
                f"backfill {backfill_id} is {before.state.value}; it cannot be {decision}"
            )
        try:
            decided = backfills.decide(cur, backfill_id, decision, reason=reason)
        except DecisionRefused as exc:
            raise OperatorError(f"backfill {backfill_id}: {exc}") from None
        stopping = None
        if decision == "cancelled" and before.current is not None:
            detail = f"backfill {backfill_id} cancelled: {reason}"
            stopping = runs.request_cancel(cur, before.current.execution_name, reason=detail)
        attempts = backfills.attempts_of(cur, [backfill_id])[backfill_id]
    shown = described(decided, attempts)
    shown["stopping_run"] = stopping["execution_name"] if stopping else None
    return shown


def described(backfill: Mapping[str, Any], attempts: Sequence[SliceAttempt]) -> dict[str, Any]:
    """A backfill's row, with where it stands: its state, slices done of all, the slice under
    way (or that stopped it) and its run's status, and that slice's failed runs."""
    now = _progress(backfill, attempts)
    current = now.current
    return {
        **backfill,
        "state": now.state.value,
        "slices_done": now.slices_done,
        "slice_count": now.slice_count,
        "slices": f"{now.slices_done}/{now.slice_count}",
        "current_run": current.execution_name if current else None,
        "current_run_status": (current.run_status or "starting") if current else None,
        "failures": now.failures,
    }


def _progress(backfill: Mapping[str, Any], attempts: Sequence[SliceAttempt]) -> Progress:
    return progress(
        BackfillStatus(backfill["status"]),
        BackfillRange.of(backfill),
        attempts,
        retried_at=backfill["retried_at"],
    )


def _slices(
    wanted: BackfillRange,
    attempts: Sequence[SliceAttempt],
    ledger: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    slices = []
    # (A backfill asked for without the command's checks may have more; the first are shown.)
    for number, window in enumerate(islice(wanted.slices(), MAX_SLICES), start=1):
        tried = [attempt for attempt in attempts if attempt.slice_number == number]
        last = ledger.get(tried[-1].execution_name, {}) if tried else {}
        slices.append(
            {
                "slice": number,
                "window_start": isoformat(window.start),
                "window_end": isoformat(window.end),
                "attempts": len(tried),
                "execution_name": tried[-1].execution_name if tried else None,
                "status": last.get("status", "starting") if tried else "pending",
                "records": last.get("records"),
                "error": last.get("error"),
            }
        )
    return slices


def _existing(cur: Any, backfill_id: int) -> dict[str, Any]:
    row = backfills.find(cur, backfill_id)
    if row is None:
        raise OperatorError(
            f"no backfill {backfill_id}; `sourceflow backfill list` shows the backfills"
        )
    return row
