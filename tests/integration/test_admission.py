"""Admission on a real PostgreSQL: the scheduler puts due slots and run requests in a line and
starts them only while fewer runs are under way than downloads can run at once; a run's end
frees its place; nothing starts twice, whatever the duplicates, failures and races.

Admission counts every run under way in the database, so these tests run in a database of
their own (the shared one holds other tests' locked sources).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn

from infra.migrate import apply_migrations
from services.scheduler.domain import Admission
from services.scheduler.service import Admit, admit, dispatch, start_runs
from services.unlocking.service import unlock_run
from shared.errors import TransientError
from shared.runtime.executions import execution_name, requested_run_nonce
from shared.store import admission as line
from shared.store.db import Database
from shared.store.sources import SourceSpec, register_source
from tests.builders import Execution
from tests.integration.conftest import RESPECS, validate

CAPACITY = 2
VALIDATION_BOUND = timedelta(minutes=4)
NOW = datetime.now(UTC).replace(second=30, microsecond=0)
SLOT = NOW.replace(second=0)  # of a one-minute schedule at NOW


@pytest.fixture(scope="module")
def own_url(migrated_url: str) -> Iterator[str]:
    name = f"it_admission_{os.getpid()}"
    statements = [
        sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)),
        sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)),
    ]
    _run_outside_transactions(migrated_url, statements)
    url = make_dsn(migrated_url, dbname=name)
    apply_migrations(url)
    yield url
    _run_outside_transactions(
        migrated_url, [sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))]
    )


def _run_outside_transactions(url: str, statements: list[sql.Composed]) -> None:
    with closing(psycopg2.connect(url)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)


@pytest.fixture
def db(own_url: str) -> Iterator[Database]:
    """The test's database, emptied: no source, run or waiting run of another test."""
    database = Database(own_url, application_name="it-admission")
    with database.transaction() as cur:
        cur.execute("TRUNCATE public.run_admission, public.source CASCADE")
    yield database
    database.close()


class FakeStarter:
    """Starts executions by name as Step Functions does: a name already started is the same
    execution (ExecutionAlreadyExists, answered with its ARN by the real starter). It can be
    told to fail at a given start, or to take its time."""

    def __init__(self, *, fail_at: int | None = None, seconds: float = 0.0) -> None:
        self.started: list[str] = []
        self.calls = 0
        self._fail_at, self._seconds = fail_at, seconds
        self._lock = threading.Lock()

    def __call__(self, source_id: str, started: datetime, nonce: str) -> str:
        time.sleep(self._seconds)
        with self._lock:
            self.calls += 1
            if self.calls == self._fail_at:
                raise TransientError("Step Functions unreachable")
            name = execution_name(source_id, started, nonce)
            if name not in self.started:
                self.started.append(name)
        return Execution(source_id, name).arn


def admitter(db: Database, starter: FakeStarter, capacity: int = CAPACITY) -> Admit:
    return partial(
        admit,
        db=db,
        start_run=starter,
        admission=Admission(capacity=capacity, validation_bound=VALIDATION_BOUND),
    )


def scheduled_sources(db: Database, count: int) -> list[str]:
    """Sources due every minute, none run yet; in the order they were made."""
    sources = []
    for _ in range(count):
        source_id = f"adm-{uuid.uuid4().hex[:12]}"
        register_source(
            db,
            SourceSpec(
                source_id=source_id,
                name="admission test",
                source_type="http_api",
                connection={"base_url": "http://vendor.invalid", "dataset": source_id},
            ),
        )
        sources.append(source_id)
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET schedule_interval = interval '1 minute', runtime_count = 3"
            " WHERE source_id = ANY(%s)",
            (sources,),
        )
    return sources


def tick_at(db: Database, starter: FakeStarter, at: datetime = NOW) -> list[str]:
    """A schedule tick's due runs queued, then its admission pass; returns the ARNs started."""
    dispatch(at, db=db)
    return admitter(db, starter)()


def burst(db: Database, count: int) -> FakeStarter:
    """`count` sources due at once, handled by one tick; returns the starter it started with."""
    scheduled_sources(db, count)
    starter = FakeStarter()
    tick_at(db, starter)
    return starter


def under_way(db: Database, bound: timedelta = VALIDATION_BOUND) -> int:
    with db.transaction() as cur:
        return line.runs_under_way(cur, validation_bound=bound)


def waiting(db: Database) -> list[str]:
    with db.transaction() as cur:
        return [run.source_id for run in line.waiting_runs(cur, limit=10_000)]


def execution_of(name: str) -> Execution:
    return Execution(name.rsplit("-", 2)[0], name)


def validate_started(db: Database, starter: FakeStarter) -> list[Execution]:
    """Validation runs each started execution not validated yet: it locks its source."""
    executions = [execution_of(name) for name in starter.started]
    with db.transaction() as cur:
        cur.execute("SELECT execution_name FROM public.source_run")
        recorded = {row["execution_name"] for row in cur.fetchall()}
    for execution in executions:
        if execution.name not in recorded:
            assert validate(db, execution)["decision"] == "run"
    return executions


def end_run(db: Database, execution: Execution) -> None:
    """The run ends (unlocked, ledger closed), as its Unlock step does."""
    unlock_run(execution.unlock_failed(), db=db, respecs=RESPECS, on_run_ended=lambda _: None)


def run_requested(source_id: str, event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "detail-type": "Run Requested",
        "time": NOW.isoformat(),
        "detail": {"source_id": source_id},
    }


# -- a burst -----------------------------------------------------------------------------------


def test_a_burst_starts_as_many_runs_as_downloads_run_at_once_and_the_rest_wait_in_order(
    db: Database,
) -> None:
    # Given ten sources due at once
    sources = scheduled_sources(db, 10)
    starter = FakeStarter()

    # When the tick handles them
    started = tick_at(db, starter)

    # Then two runs start, and the other eight wait, claimed for their slot
    assert len(started) == CAPACITY
    started_sources = [execution_of(name).source_id for name in starter.started]
    assert sorted(started_sources + waiting(db)) == sorted(sources)
    # And the two admitted count as under way before validation records them, and after
    assert under_way(db) == CAPACITY
    validate_started(db, starter)
    assert under_way(db) == CAPACITY

    # And a tick again in the same slot (a duplicate, a redelivery) queues and starts nothing
    assert tick_at(db, starter) == []
    assert len(waiting(db)) == 8


def test_each_run_end_frees_a_place_for_the_oldest_waiting_and_every_run_starts_once(
    db: Database,
) -> None:
    # Given a burst of seven, two under way
    starter = burst(db, 7)
    line_before = waiting(db)

    # When runs end one by one, each end announced (admit), as their Run Succeeded events do
    ended: list[str] = []
    while len(ended) < 7:
        running = [e for e in validate_started(db, starter) if e.name not in ended]
        assert len(running) <= CAPACITY
        end_run(db, running[0])
        ended.append(running[0].name)
        admitter(db, starter)()

    # Then every run started once, the waiting ones in the order they waited, none waits
    assert len(starter.started) == len(set(starter.started)) == 7
    assert [execution_of(n).source_id for n in starter.started[CAPACITY:]] == line_before
    assert waiting(db) == [] and under_way(db) == 0


# -- what counts as under way ------------------------------------------------------------------


def test_an_admitted_run_no_one_validated_stops_counting_after_the_validation_bound(
    db: Database,
) -> None:
    burst(db, 1)
    assert under_way(db) == 1
    # (a run admitted longer ago than the Validate timeout downloads nothing)
    assert under_way(db, bound=timedelta(0)) == 0


def test_locks_of_no_recorded_run_expired_leases_and_approval_waits_do_not_count(
    db: Database,
) -> None:
    # Given two runs under way
    starter = burst(db, 2)
    first, second = validate_started(db, starter)
    [other] = scheduled_sources(db, 1)
    assert under_way(db) == 2
    with db.transaction() as cur:
        # When the first one's lease ran out (its execution died)
        cur.execute(
            "UPDATE public.source SET lock_expires_at = now() - interval '1 second'"
            " WHERE locked_by = %s",
            (first.arn,),
        )
        # and the second waits for a person to approve its Re-specs query
        cur.execute(
            "INSERT INTO public.run_approval (execution_arn, source_id, query, query_hash,"
            " requested_by, expires_at, task_token) VALUES (%s, %s, 'UPDATE', %s, 'alice',"
            " now() + interval '1 day', 'token')",
            (second.arn, second.source_id, "0" * 64),
        )
        # and some source is locked by something that is no run of the ledger
        cur.execute(
            "UPDATE public.source SET locked_by = 'arn:other', locked_at = now(),"
            " lock_expires_at = now() + interval '1 hour' WHERE source_id = %s",
            (other,),
        )
    # Then none of them holds a place
    assert under_way(db) == 0


def test_a_run_whose_download_is_recorded_frees_its_place_before_its_unlock(
    db: Database,
) -> None:
    # Given a burst of three, two under way
    starter = burst(db, 3)
    first, _ = validate_started(db, starter)

    # When the first one's download is recorded (it goes on to Unlock: no download worker)
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source_run SET status = 'downloaded' WHERE execution_arn = %s",
            (first.arn,),
        )

    # Then it holds no place, and the next pass starts the third
    assert under_way(db) == 1
    assert len(admitter(db, starter)()) == 1
    assert waiting(db) == []


def test_a_run_started_outside_the_scheduler_takes_a_place_once_it_holds_its_lease(
    db: Database,
) -> None:
    [source_id] = scheduled_sources(db, 1)
    validate(db, Execution(source_id, f"{source_id}-direct"))
    assert under_way(db) == 1


# -- the line ----------------------------------------------------------------------------------


def test_a_run_request_delivered_twice_waits_once_and_starts_once(db: Database) -> None:
    # Given every place taken
    starter = burst(db, CAPACITY)
    [source_id] = scheduled_sources(db, 1)
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET schedule_interval = NULL WHERE source_id = %s", (source_id,)
        )

    # When a Run Requested event for it arrives twice
    event = run_requested(source_id, str(uuid.uuid4()))
    assert start_runs(event, db=db, admit=admitter(db, starter)) == []
    assert start_runs(event, db=db, admit=admitter(db, starter)) == []

    # Then it waits once, its place known to the requester
    assert waiting(db) == [source_id]
    with db.transaction() as cur:
        place = line.requested_run(cur, source_id, requested_run_nonce(event["id"]))
    assert place is not None
    assert (place["waiting_before"], place["execution_arn"]) == (0, None)

    # And when a run ends (its Run Succeeded event), it starts, once
    end_run(db, validate_started(db, starter)[0])
    ended = {"detail-type": "Run Succeeded", "detail": {"source_id": "another"}}
    [arn] = start_runs(ended, db=db, admit=admitter(db, starter))
    assert execution_of(arn.rsplit(":", 1)[1]).source_id == source_id
    assert start_runs(event, db=db, admit=admitter(db, starter)) == []
    assert len(starter.started) == CAPACITY + 1


def test_a_newer_slot_takes_the_place_of_the_waiting_one_not_a_second_place(
    db: Database,
) -> None:
    # Given a source waiting with the slot of NOW, every place taken
    starter = burst(db, CAPACITY)
    [late] = scheduled_sources(db, 1)
    tick_at(db, starter)
    assert waiting(db) == [late]
    validate_started(db, starter)  # (the runs under way hold their sources: not due)

    # When the next minute's tick finds it due again
    tick_at(db, starter, NOW + timedelta(minutes=1))

    # Then it still waits once, for the newer slot (missed slots are not back-filled)
    with db.transaction() as cur:
        [run] = line.waiting_runs(cur, limit=10)
    assert run.source_id == late
    assert run.started_for == SLOT + timedelta(minutes=1)


# -- failures and races ------------------------------------------------------------------------


def test_a_start_that_fails_keeps_the_runs_started_before_it_admitted_and_the_rest_waiting(
    db: Database,
) -> None:
    # Given five due sources and a starter that fails at its second start
    scheduled_sources(db, 5)
    starter = FakeStarter(fail_at=2)

    # When the tick handles them, Then the delivery fails (and will be retried)
    with pytest.raises(TransientError):
        tick_at(db, starter)
    # And the run started before the failure is admitted; the others wait, slots claimed
    assert len(starter.started) == 1
    assert under_way(db) == 1
    assert len(waiting(db)) == 4

    # And the retried delivery starts one more, no run twice
    tick_at(db, starter)
    assert len(starter.started) == len(set(starter.started)) == CAPACITY
    assert len(waiting(db)) == 3


def test_a_pass_that_died_before_its_commit_is_made_good_by_the_next(db: Database) -> None:
    # Given three runs waiting, the first started by a pass that died before recording it
    scheduled_sources(db, 3)
    dispatch(NOW, db=db)
    with db.transaction() as cur:
        first = line.waiting_runs(cur, limit=1)[0]
    starter = FakeStarter()
    starter(first.source_id, first.started_for, first.nonce)

    # When the next pass comes
    admitter(db, starter)()

    # Then it met that execution first in the line and recorded it; none started twice
    assert starter.started[0] == first.execution_name
    assert len(starter.started) == len(set(starter.started)) == CAPACITY
    assert under_way(db) == CAPACITY
    assert len(waiting(db)) == 1


def test_passes_at_the_same_moment_never_admit_past_the_capacity(own_url: str) -> None:
    # Given ten waiting runs and four scheduler invocations at once, each its own session,
    # each start slow enough for them to overlap
    setup = Database(own_url, application_name="it-admission")
    with setup.transaction() as cur:
        cur.execute("TRUNCATE public.run_admission, public.source CASCADE")
    scheduled_sources(setup, 10)
    dispatch(NOW, db=setup)
    setup.close()
    starter = FakeStarter(seconds=0.05)

    def one_pass(_: int) -> list[str]:
        session = Database(own_url, application_name="it-admission-race")
        try:
            return admitter(session, starter)()
        finally:
            session.close()

    with ThreadPoolExecutor(max_workers=4) as invocations:
        started = [arn for arns in invocations.map(one_pass, range(4)) for arn in arns]

    # Then exactly as many runs started as there are places
    assert len(started) == len(starter.started) == starter.calls == CAPACITY
