"""Freshness on a real database: the scheduler's tick announces each overdue episode of a
scheduled source once (Source Overdue), however many ticks or schedulers see it, and clears it
when the source next succeeds (Source Recovered); `sourceflow sources list` says the same.

The tick's moment is the scheduler's `now`, so these tests tick "later" instead of waiting.
The database is shared with other tests' sources: each test looks at its own source only."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest

from ops.sources import sources_list
from services.scheduler.service import announce_freshness
from shared.errors import TransientError
from shared.runtime import contracts
from shared.runtime.catalogue import DetailType
from shared.store.db import Database
from tests.integration.conftest import MakeSource, race

MINUTE = timedelta(minutes=1)


class Published(list[tuple[str, dict[str, Any]]]):
    """The events a scheduler put, each checked against its contract as the publisher does."""

    def __call__(self, detail_type: str, detail: Mapping[str, Any]) -> str:
        name = DetailType(detail_type).contract
        self.append((str(detail_type), contracts.message(name, correlation_id="it", **detail)))
        return "event-id"

    def about(self, source_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(kind, detail) for kind, detail in self if detail["source_id"] == source_id]


def scheduled_source(make_source: MakeSource, db: Database, *, every: str = "1 minute") -> str:
    source_id = make_source()
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET schedule_interval = %s::interval WHERE source_id = %s",
            (every, source_id),
        )
    return source_id


def expected_since(db: Database, source_id: str) -> datetime:
    """When the source was given its schedule (the newest change of its history)."""
    with db.transaction() as cur:
        cur.execute(
            "SELECT max(changed_at) AS at FROM public.source_change WHERE source_id = %s",
            (source_id,),
        )
        row = cur.fetchone()
    assert row is not None and row["at"] is not None
    return row["at"]  # type: ignore[no-any-return]


def record_run(db: Database, source_id: str, status: str, finished_at: datetime) -> None:
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO public.source_run (execution_arn, execution_name, source_id, status,"
            " flow_type, started_at, finished_at) VALUES (%s, %s, %s, %s, 'normal', %s, %s)",
            (
                f"arn:aws:states:eu-west-1:123456789012:execution:sf:{uuid.uuid4().hex}",
                f"{source_id}-{uuid.uuid4().hex[:8]}",
                source_id,
                status,
                finished_at - MINUTE / 2,
                finished_at,
            ),
        )


def announced_since(db: Database, source_id: str) -> datetime | None:
    with db.transaction() as cur:
        cur.execute("SELECT since FROM public.source_overdue WHERE source_id = %s", (source_id,))
        row = cur.fetchone()
    return None if row is None else row["since"]


def listed(db: Database, source_id: str, now: datetime) -> dict[str, Any]:
    [row] = [row for row in sources_list(db, now=now) if row["source_id"] == source_id]
    return row


def test_an_overdue_episode_is_announced_once_and_cleared_when_the_source_next_succeeds(
    db: Database, make_source: MakeSource
) -> None:
    # Given a source run every minute, failing since it was scheduled (2 periods by default)
    source_id = scheduled_source(make_source, db)
    since = expected_since(db, source_id)
    record_run(db, source_id, "failed", since + MINUTE / 2)
    published = Published()

    # When ticks come before, just after and well after its two minutes passed
    announce_freshness(since + 2 * MINUTE, db=db, publish=published)
    assert published.about(source_id) == []
    for late in (2 * MINUTE + timedelta(seconds=1), 3 * MINUTE, 10 * MINUTE):
        announce_freshness(since + late, db=db, publish=published)

    # Then one Source Overdue says since when and from when
    [(kind, detail)] = published.about(source_id)
    assert kind == DetailType.SOURCE_OVERDUE
    assert detail["schedule"] == "every 1m" and detail["overdue_after_periods"] == 2
    assert detail["last_success_at"] is None
    assert (detail["since"], detail["overdue_at"]) == (
        contracts.format_timestamp(since),
        contracts.format_timestamp(since + 2 * MINUTE),
    )
    assert announced_since(db, source_id) == since
    assert listed(db, source_id, since + 10 * MINUTE)["overdue"] is True

    # When it succeeds, the next tick says it recovered, once, and clears the episode
    success = since + 11 * MINUTE
    record_run(db, source_id, "succeeded", success)
    for later in (11 * MINUTE + timedelta(seconds=5), 12 * MINUTE):
        announce_freshness(since + later, db=db, publish=published)

    assert [kind for kind, _ in published.about(source_id)] == [
        DetailType.SOURCE_OVERDUE,
        DetailType.SOURCE_RECOVERED,
    ]
    recovered = published.about(source_id)[1][1]
    assert recovered["recovered_at"] == contracts.format_timestamp(success)
    assert announced_since(db, source_id) is None
    fresh = listed(db, source_id, since + 12 * MINUTE)
    assert (fresh["overdue"], fresh["last_success_at"]) == (False, success)
    assert fresh["last_success_age"] == "1m 0s"


def test_a_publish_that_fails_records_nothing_and_the_next_tick_announces(
    db: Database, make_source: MakeSource
) -> None:
    source_id = scheduled_source(make_source, db)
    now = expected_since(db, source_id) + 5 * MINUTE

    def unreachable(detail_type: str, detail: Mapping[str, Any]) -> str:
        raise TransientError("EventBridge unreachable")

    with pytest.raises(TransientError, match="could not announce every overdue source"):
        announce_freshness(now, db=db, publish=unreachable)
    assert announced_since(db, source_id) is None

    published = Published()
    announce_freshness(now + MINUTE, db=db, publish=published)
    assert [kind for kind, _ in published.about(source_id)] == [DetailType.SOURCE_OVERDUE]


def test_two_schedulers_ticking_at_once_announce_an_episode_once(
    db: Database, make_source: MakeSource, migrated_url: str
) -> None:
    source_id = scheduled_source(make_source, db)
    now = expected_since(db, source_id) + 5 * MINUTE
    published = [Published(), Published()]

    def scheduler(publish: Published) -> Callable[[Database], list[str]]:
        return lambda own: announce_freshness(now, db=own, publish=publish)

    # Both decide the source is overdue, and meet at its row (held until both wait there)
    results = race(
        migrated_url, "source", "source_id", source_id, [scheduler(p) for p in published]
    )

    assert not [r for r in results if isinstance(r, Exception)], results
    announcements = [event for p in published for event in p.about(source_id)]
    assert [kind for kind, _ in announcements] == [DetailType.SOURCE_OVERDUE]


def test_a_source_kept_skipped_by_its_lock_goes_overdue_and_a_person_disabling_it_clears_it(
    db: Database, make_source: MakeSource
) -> None:
    # Given a source every 5 minutes whose runs are all skipped: another run holds its lock
    source_id = scheduled_source(make_source, db, every="5 minutes")
    since = expected_since(db, source_id)
    for minutes in (5, 10, 15):
        record_run(db, source_id, "skipped", since + minutes * MINUTE)
    published = Published()

    announce_freshness(since + 11 * MINUTE, db=db, publish=published)
    assert [kind for kind, _ in published.about(source_id)] == [DetailType.SOURCE_OVERDUE]

    # When a person disables it, the episode is cleared without an event, and it is not overdue
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET is_active = false, disabled_reason = 'vendor outage'"
            " WHERE source_id = %s",
            (source_id,),
        )
    announce_freshness(since + 12 * MINUTE, db=db, publish=published)

    assert len(published.about(source_id)) == 1
    assert announced_since(db, source_id) is None
    row = listed(db, source_id, since + 12 * MINUTE)
    assert (row["overdue"], row["next_due_at"]) == (False, None)
