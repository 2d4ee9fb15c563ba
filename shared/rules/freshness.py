"""Freshness: when a scheduled source is overdue, and what the scheduler announces about it.

The rule (README, "Freshness"): a scheduled, active source is expected to succeed at least once
every `overdue_after_periods` of its schedule periods. It is measured from `since`, the later of
its last success (of any flow but a backfill's slice, which reloads the past) and the moment it
was last expected to start running: added, enabled, or given a schedule. So a source is overdue
when

    now > since + overdue_after_periods * (its schedule period at `since`)

A rate's period is its interval; a cron's is the gap between its slots around `since` (a
weekday cron's period from Friday lasts until Monday, so a weekend is not a missed run). A
source that is disabled, deleted or unscheduled is never overdue: nobody expects it to run.
Whether its runs fail, are skipped (its lock held) or never start, only a success ends it.

The scheduler announces each overdue episode once (`announcement`): the episode is named by its
`since`, recorded when announced, and cleared when something ends it — announced as recovered
when a success did, cleared silently when a person disabled, unscheduled, rescheduled or
re-enabled the source. A tick that comes late (its moment before the episode began) ends
nothing.

Everything here is pure: no clock, no database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.rules.flows import InvalidSourceSetting
from shared.rules.schedules import Schedule
from shared.runtime.catalogue import OVERDUE_AFTER_PERIODS

# Fewer than one period would make a source overdue before its next run could succeed; more than
# a hundred is not an expectation any more (and a rare cron's hundred periods are centuries).
MIN_OVERDUE_AFTER_PERIODS = 1.0  # exclusive
MAX_OVERDUE_AFTER_PERIODS = 100.0


@dataclass(frozen=True)
class Freshness:
    """Where a source stands: its last success, its next due slot, and from when it is (or
    will be) overdue; `overdue_at` and `since` are None for a source nobody expects to run."""

    last_success_at: datetime | None
    next_due_at: datetime | None
    since: datetime | None
    overdue_at: datetime | None
    overdue: bool


def check_overdue_after_periods(source_id: str, periods: float) -> float:
    if (
        not isinstance(periods, bool)
        and isinstance(periods, int | float)
        and math.isfinite(periods)
        and MIN_OVERDUE_AFTER_PERIODS < periods <= MAX_OVERDUE_AFTER_PERIODS
    ):
        return float(periods)
    raise InvalidSourceSetting(
        f"source {source_id!r}: overdue_after_periods = {periods!r} is not valid; expected a "
        f"number over {MIN_OVERDUE_AFTER_PERIODS:g} and at most {MAX_OVERDUE_AFTER_PERIODS:g} "
        f"(default {OVERDUE_AFTER_PERIODS:g}); fix public.source.overdue_after_periods"
    )


def freshness(
    schedule: Schedule | None,
    *,
    active: bool,
    overdue_after_periods: float,
    last_success_at: datetime | None,
    expected_since: datetime,
    last_scheduled_slot: datetime | None,
    now: datetime,
) -> Freshness:
    """The source's freshness at `now`. `expected_since`: when it was added, enabled or given
    its schedule, whichever came last; `last_scheduled_slot`: the newest slot the scheduler
    started a run for."""
    if schedule is None or not active:
        return Freshness(last_success_at, None, None, None, False)
    current_slot = schedule.previous_slot(now)
    started_current = last_scheduled_slot is not None and last_scheduled_slot >= current_slot
    # (a slot not yet started is due at the next tick, if its source is free)
    next_due_at = schedule.next_slot(now) if started_current else current_slot
    since = expected_since if last_success_at is None else max(last_success_at, expected_since)
    try:
        overdue_at = since + schedule.period_at(since) * overdue_after_periods
    except OverflowError:  # beyond the year 9999: never, in effect
        return Freshness(last_success_at, next_due_at, since, None, False)
    return Freshness(last_success_at, next_due_at, since, overdue_at, now > overdue_at)


class Announcement(StrEnum):
    OVERDUE = "overdue"  # publish Source Overdue, and record the episode
    RECOVERED = "recovered"  # a success ended the episode: publish Source Recovered, clear it
    WITHDRAWN = "withdrawn"  # a person's change ended it (disabled, rescheduled): clear it


def announcement(fresh: Freshness, announced_since: datetime | None) -> Announcement | None:
    """What to announce of a source, given the `since` of the episode last announced (None:
    none is recorded). An episode is announced once; a new `since` is a new episode, and only
    a new `since` (a success, a person's change) or the source's disabling ends one."""
    if fresh.overdue:
        return None if announced_since == fresh.since else Announcement.OVERDUE
    if announced_since is None:
        return None
    if fresh.last_success_at is not None and fresh.last_success_at > announced_since:
        return Announcement.RECOVERED
    if fresh.since == announced_since:
        # The same episode seen at an earlier moment (a tick redelivered late), or after a
        # person gave it more periods: it is not over.
        return None
    return Announcement.WITHDRAWN
