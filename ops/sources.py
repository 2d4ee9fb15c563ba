"""`sourceflow sources` and `sourceflow flow`: the sources an operator lists, shows and sets
the flow of."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from ops.config import OperatorConfig, unknown_source
from ops.runs import runs_list
from shared.connectors.base import parse_connection
from shared.errors import PermanentError
from shared.rules.flows import FlowParams, InvalidFlowParams, parse_flow_params
from shared.rules.respecs import check_respecs_query, parse_allowed_tables
from shared.rules.schedules import InvalidSchedule
from shared.store import freshness
from shared.store.db import Database, session_login
from shared.store.ledger import set_flow_params
from shared.store.sources import get_source, source_changes
from shared.timefmt import isoformat, utc_now

SOURCE_SHOW_RUNS = 10  # the last runs `sourceflow sources show` lists
SOURCE_SHOW_CHANGES = 20  # and the last changes of its settings


def flow_name(source_id: str, params: Mapping[str, Any] | None) -> str:
    try:
        return str(parse_flow_params(source_id, params).canonical()["flow_type"])
    except InvalidFlowParams:
        return "INVALID PARAMS"


def source_problems(source: Mapping[str, Any]) -> list[str]:
    """What keeps the source from running, in validation's words: its params, its connection
    (a value too deep to read among them). Listing them never fails."""
    source_id = source["source_id"]
    problems = []
    try:
        parse_flow_params(source_id, source["batch_execution_params"])
    except InvalidFlowParams as exc:
        problems.append(str(exc))
    try:
        parse_connection(source_id, source["source_type"], source["connection"])
    except PermanentError as exc:
        problems.append(str(exc))
    return problems


def sources_list(
    db: Database, *, deleted: bool = False, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The sources (`deleted`: the deleted ones too), each with why it is disabled and its
    freshness at `now` (shared/rules/freshness.py)."""
    now = now or utc_now()
    with db.transaction() as cur:
        cur.execute(
            """
            SELECT s.source_id, s.source_type, s.is_active, s.batch_execution_params,
                   s.last_modified_date, s.runtime_count, s.locked_by, s.lock_expires_at,
                   s.disabled_reason, s.disabled_until, s.deleted_at,
                   r.status AS last_run_status, r.started_at AS last_run_at
              FROM public.source s
              LEFT JOIN LATERAL (
                    SELECT status, started_at FROM public.source_run
                     WHERE source_id = s.source_id ORDER BY started_at DESC LIMIT 1
              ) r ON true
             WHERE %(deleted)s OR s.deleted_at IS NULL
             ORDER BY s.source_id
            """,
            {"deleted": deleted},
        )
        rows = [dict(row) for row in cur.fetchall()]
        fresh_rows = freshness.freshness_rows(cur, [row["source_id"] for row in rows])
    for row in rows:
        row["flow"] = flow_name(row["source_id"], row.pop("batch_execution_params"))
        row["disabled"] = disabled_said(row)
        row.update(freshness_said(fresh_rows[row["source_id"]], now))
    return rows


def freshness_said(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A source's last success (when, how long ago), its next due slot, and whether it is
    overdue; a schedule validation would refuse leaves the last two unknown (None)."""
    last_success_at = row["last_success_at"]
    said: dict[str, Any] = {
        "last_success_at": last_success_at,
        "last_success_age": None if last_success_at is None else age_said(now - last_success_at),
        "next_due_at": None,
        "overdue": None,
        "overdue_at": None,
    }
    try:
        fresh = freshness.freshness_of(row, now)
    except InvalidSchedule:
        return said
    return {
        **said,
        "next_due_at": fresh.next_due_at,
        "overdue": fresh.overdue,
        "overdue_at": fresh.overdue_at,
    }


# (unit, seconds), largest first
_AGE_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


def age_said(ago: timedelta) -> str:
    """How long ago, in its two largest units: `3d 4h`, `2h 5m`, `5m 12s`, `12s` (a moment a
    little ahead of this clock reads as `0s`)."""
    seconds = max(int(ago.total_seconds()), 0)
    for (unit, length), (smaller, smaller_length) in pairwise(_AGE_UNITS):
        if seconds >= length:
            return f"{seconds // length}{unit} {seconds % length // smaller_length}{smaller}"
    return f"{seconds}s"


def disabled_said(row: Mapping[str, Any]) -> str | None:
    """Why the source does not run, for the list: deleted, or paused (why, until when)."""
    if row["deleted_at"] is not None:
        return f"deleted {isoformat(row['deleted_at'])}"
    if row["is_active"]:
        return None
    until = f" until {isoformat(row['disabled_until'])}" if row["disabled_until"] else ""
    return f"{row['disabled_reason'] or 'is_active = false'}{until}"


def source_show(db: Database, source_id: str) -> dict[str, Any]:
    source = get_source(db, source_id)
    if source is None:
        raise unknown_source(source_id)
    source["flow"] = flow_name(source_id, source["batch_execution_params"])
    source["problems"] = source_problems(source)
    with db.transaction() as cur:
        cur.execute(
            """
            SELECT change_id, changed_at, changed_by, reason, from_params, to_params
              FROM public.source_flow_history WHERE source_id = %s
             ORDER BY change_id DESC LIMIT 20
            """,
            (source_id,),
        )
        history = [dict(row) for row in cur.fetchall()]
        changes = source_changes(cur, source_id, limit=SOURCE_SHOW_CHANGES)
    return {
        "source": source,
        "runs": runs_list(db, source_id=source_id, limit=SOURCE_SHOW_RUNS),
        "flow_history": history,
        "changes": changes,
    }


# -- flows ------------------------------------------------------------------------------------


def flow_set(
    db: Database,
    source_id: str,
    params: FlowParams,
    *,
    reason: str,
    respecs_tables: frozenset[str],
) -> dict[str, Any]:
    """Write the canonical params; a Re-specs query validation would refuse is refused here,
    with validation's own message, before anything changes."""
    if params.sql is not None:
        check_respecs_query(source_id, params.sql, respecs_tables)
    canonical = params.canonical()
    with db.transaction() as cur:
        if not set_flow_params(cur, source_id, canonical, reason=reason):
            raise unknown_source(source_id)
        changed_by = session_login(cur)
    return {"source_id": source_id, "batch_execution_params": canonical, "changed_by": changed_by}


def allowed_respecs_tables(config: OperatorConfig) -> frozenset[str]:
    return parse_allowed_tables(config.values.get("RESPECS_ALLOWED_TABLES", ""))
