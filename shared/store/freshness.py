"""What freshness reads and the scheduler writes (shared/rules/freshness.py has the rule): each
source's last success and since when it is expected to run, and the overdue episode announced
(public.source_overdue, migration 0019)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.rules.flows import FlowType
from shared.rules.freshness import Freshness, freshness
from shared.rules.schedules import source_schedule
from shared.store.db import fetch_one
from shared.store.runs import RunStatus

# Each row: the source's schedule and state, its last success, when it was last added, enabled
# or rescheduled (its settings history, migration 0018; else when its row was created), and the
# `since` of the overdue episode announced, if any.
_FRESHNESS = """
    SELECT s.source_id, s.schedule_interval, s.schedule_cron, s.is_active,
           s.overdue_after_periods, s.last_scheduled_slot,
           r.finished_at AS last_success_at,
           GREATEST(s.created_at, c.changed_at) AS expected_since,
           o.since AS announced_since
      FROM public.source s
      LEFT JOIN public.source_overdue o ON o.source_id = s.source_id
      LEFT JOIN LATERAL (
            SELECT finished_at FROM public.source_run
             WHERE source_id = s.source_id AND status = %(succeeded)s
               AND flow_type IS DISTINCT FROM %(backfill)s AND finished_at IS NOT NULL
             ORDER BY finished_at DESC LIMIT 1
      ) r ON true
      LEFT JOIN LATERAL (
            SELECT max(changed_at) AS changed_at FROM public.source_change
             WHERE source_id = s.source_id
               AND (action IN ('added', 'enabled')
                    OR changes ?| ARRAY['schedule_interval', 'schedule_cron'])
      ) c ON true
"""
_PARAMS = {"succeeded": RunStatus.SUCCEEDED, "backfill": FlowType.BACKFILL}


def watched_sources(cur: Any) -> list[dict[str, Any]]:
    """The sources freshness watches: the active scheduled ones, and any with an episode
    announced (to clear it once it is over)."""
    cur.execute(
        _FRESHNESS
        + """
         WHERE (s.is_active AND (s.schedule_interval IS NOT NULL OR s.schedule_cron IS NOT NULL))
            OR o.source_id IS NOT NULL
         ORDER BY s.source_id
        """,
        _PARAMS,
    )
    return [dict(row) for row in cur.fetchall()]


def freshness_rows(cur: Any, source_ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The freshness row of each source (of these only, when given), by id."""
    cur.execute(
        _FRESHNESS + " WHERE %(all)s OR s.source_id = ANY(%(ids)s)",
        {**_PARAMS, "all": source_ids is None, "ids": source_ids or []},
    )
    return {row["source_id"]: dict(row) for row in cur.fetchall()}


def freshness_of(row: Mapping[str, Any], now: datetime) -> Freshness:
    """A freshness row's Freshness at `now`; InvalidSchedule when its schedule is unreadable."""
    return freshness(
        source_schedule(row["source_id"], row["schedule_interval"], row["schedule_cron"]),
        active=row["is_active"],
        overdue_after_periods=row["overdue_after_periods"],
        last_success_at=row["last_success_at"],
        expected_since=row["expected_since"],
        last_scheduled_slot=row["last_scheduled_slot"],
        now=now,
    )


def record_overdue(cur: Any, source_id: str, since: datetime, overdue_at: datetime) -> bool:
    """Record the episode as announced; False when it already was (by another tick or
    scheduler, which waits here for the first to commit)."""
    return (
        fetch_one(
            cur,
            """
            INSERT INTO public.source_overdue (source_id, since, overdue_at)
            VALUES (%s, %s, %s)
            ON CONFLICT (source_id) DO UPDATE
               SET since = EXCLUDED.since, overdue_at = EXCLUDED.overdue_at, announced_at = now()
             WHERE source_overdue.since IS DISTINCT FROM EXCLUDED.since
            RETURNING source_id
            """,
            (source_id, since, overdue_at),
        )
        is not None
    )


def clear_overdue(cur: Any, source_id: str, since: datetime) -> bool:
    """Clear the episode announced since `since`; False when another tick already did."""
    return (
        fetch_one(
            cur,
            "DELETE FROM public.source_overdue WHERE source_id = %s AND since = %s"
            " RETURNING source_id",
            (source_id, since),
        )
        is not None
    )
