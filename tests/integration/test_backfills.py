"""Backfills against a real PostgreSQL.

A person asks and decides through the database's functions (migration 0014), as their own
login: a range over the source's backfill_approval_days waits for a second person, whom the
database requires (the requester and the superuser cannot approve). Slices go through the
scheduler (a fake execution starter), validation, download (a fake source) and unlocking as
their handlers call them: each slice its own `backfill` run of its window, one at a time; the
cursor, landed_since, params and runtime count untouched; no landed version listed; a special
flow's reset neither done nor hidden by a backfill.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2.errors
import pytest

from ops import backfills as operator
from ops.config import OperatorError
from services.scheduler.service import admit, queue_backfill_slices, request_resets
from services.unlocking.service import unlock_run
from shared.rules.backfills import BackfillRange
from shared.rules.flows import WindowField
from shared.runtime.executions import execution_name
from shared.store import backfills
from shared.store.approvals import DecisionRefused
from shared.store.db import Database
from shared.store.sources import get_source
from tests.builders import Execution, records_modified, timeline
from tests.fakes import FakeConnector, FakeSink
from tests.integration.conftest import (
    RESPECS,
    ROOM_FOR_EVERY_RUN,
    MakeSource,
    download,
    run_row,
    runs_of,
    validate,
)

People = dict[str, Database]
ALICE, BOB = "it_alice", "it_bob"
DAY = timedelta(days=1)
T1 = datetime(2026, 3, 1, tzinfo=UTC)
THREE_DAYS = BackfillRange(WindowField.LAST_MODIFIED, T1, T1 + 3 * DAY, DAY)
FORTY_DAYS = BackfillRange(WindowField.LAST_MODIFIED, T1, T1 + 40 * DAY, 20 * DAY)


@pytest.fixture(autouse=True)
def no_backfill_outlives_its_test(db: Database) -> Iterator[None]:
    """The scheduler acts on every active backfill: a test's must not reach the next test."""
    yield
    with db.transaction() as cur:
        cur.execute("UPDATE public.backfill SET status = 'cancelled' WHERE status = 'active'")


class Scheduler:
    """The scheduler's backfill step at a tick and its admission pass, with an execution
    starter that starts nothing but says which executions it was asked for."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.started: list[Execution] = []

    def tick(self, *, busy: tuple[str, ...] = ()) -> list[Execution]:
        def start(source_id: str, started: datetime, nonce: str) -> str:
            execution = Execution(source_id, execution_name(source_id, started, nonce))
            self.started.append(execution)
            return execution.arn

        before = len(self.started)
        queue_backfill_slices(datetime.now(UTC), db=self.db, busy=busy)
        admit(db=self.db, start_run=start, admission=ROOM_FOR_EVERY_RUN)
        return self.started[before:]


def run_slice(db: Database, execution: Execution, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Validate, download (the fake source serves `records`) and unlock one slice's execution."""
    validated = validate(db, execution)
    assert validated["decision"] == "run", validated
    download(db, execution, validated["plan"], FakeConnector(records), FakeSink())
    unlock_run(execution.unlock_succeeded(), db=db, respecs=RESPECS)
    row = run_row(db, execution.arn)
    assert row is not None
    return row


def timeline_of(db: Database, source_id: str) -> tuple[Any, ...]:
    source = get_source(db, source_id)
    assert source is not None
    return timeline(source)


def asked_for(db: Database, people: People, make_source: MakeSource) -> tuple[str, int]:
    """Given: alice asked for THREE_DAYS of a source that has run before; returns the source
    and the backfill."""
    source_id = make_source(runtime_count=5, cursor=T1 + 60 * DAY)
    with people[ALICE].transaction() as cur:
        asked = backfills.request(cur, source_id, THREE_DAYS, reason="x")
    return source_id, asked["backfill_id"]


def landed_versions(db: Database, source_id: str) -> int:
    with db.transaction() as cur:
        cur.execute(
            "SELECT count(*) AS n FROM public.landed_version WHERE source_id = %s", (source_id,)
        )
        return int(cur.fetchone()["n"])


# -- asking and deciding -------------------------------------------------------------------------


def test_a_short_backfill_is_active_at_once_and_recorded_as_its_asker(
    people: People, make_source: MakeSource
) -> None:
    source_id = make_source()
    with people[ALICE].transaction() as cur:
        asked = backfills.request(cur, source_id, THREE_DAYS, reason="a vendor fix")
    assert (asked["status"], asked["requested_by"], asked["reason"]) == (
        "active",
        ALICE,
        "a vendor fix",
    )
    assert (asked["range_start"], asked["range_end"], asked["slice_length"]) == (
        T1,
        T1 + 3 * DAY,
        DAY,
    )


def test_a_long_backfill_waits_for_a_second_person_whom_the_database_requires(
    db: Database, people: People, make_source: MakeSource
) -> None:
    # Given alice asks for forty days of a source whose backfills over 31 days need approval
    source_id = make_source()
    with people[ALICE].transaction() as cur:
        asked = backfills.request(cur, source_id, FORTY_DAYS, reason="re-load March")
    assert asked["status"] == "awaiting_approval"
    backfill_id = asked["backfill_id"]

    # When alice approves it herself, or the superuser does, Then the database refuses
    with (
        pytest.raises(DecisionRefused, match=r"it_alice asked for backfill .*second person"),
        people[ALICE].transaction() as cur,
    ):
        backfills.decide(cur, backfill_id, "approved", reason=None)
    with pytest.raises(DecisionRefused, match="superuser"), db.transaction() as cur:
        backfills.decide(cur, backfill_id, "approved", reason=None)

    # When bob approves, Then it is active and says so, as bob's login
    with people[BOB].transaction() as cur:
        approved = backfills.decide(cur, backfill_id, "approved", reason="checked the range")
    assert (approved["status"], approved["decided_by"]) == ("active", BOB)
    assert approved["decision_reason"] == "checked the range"

    # And it cannot be approved again
    with (
        pytest.raises(DecisionRefused, match="is active, not awaiting approval"),
        people[BOB].transaction() as cur,
    ):
        backfills.decide(cur, backfill_id, "rejected", reason="late")


def test_the_threshold_is_the_sources_own_setting(
    db: Database, people: People, make_source: MakeSource
) -> None:
    source_id = make_source()
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET backfill_approval_days = 0 WHERE source_id = %s",
            (source_id,),
        )
    with people[ALICE].transaction() as cur:
        asked = backfills.request(cur, source_id, THREE_DAYS, reason="x")
    assert asked["status"] == "awaiting_approval"


def test_a_rejected_or_cancelled_backfill_is_over(people: People, make_source: MakeSource) -> None:
    source_id = make_source()
    with people[ALICE].transaction() as cur:
        waiting = backfills.request(cur, source_id, FORTY_DAYS, reason="x")
        active = backfills.request(cur, source_id, THREE_DAYS, reason="y")
    # Anyone may reject (the asker too) or cancel: stopping needs no second person
    with people[ALICE].transaction() as cur:
        rejected = backfills.decide(cur, waiting["backfill_id"], "rejected", reason="too much")
        cancelled = backfills.decide(cur, active["backfill_id"], "cancelled", reason="wrong")
    assert (rejected["status"], rejected["decided_by"]) == ("rejected", ALICE)
    assert (cancelled["status"], cancelled["cancelled_by"]) == ("cancelled", ALICE)
    assert cancelled["cancel_reason"] == "wrong"
    for backfill_id in (waiting["backfill_id"], active["backfill_id"]):
        with (
            pytest.raises(DecisionRefused, match="already"),
            people[BOB].transaction() as cur,
        ):
            backfills.decide(cur, backfill_id, "cancelled", reason="again")


def test_a_person_writes_backfills_only_through_the_functions(
    people: People, make_source: MakeSource
) -> None:
    source_id = make_source()
    with people[ALICE].transaction() as cur:
        asked = backfills.request(cur, source_id, FORTY_DAYS, reason="x")
    for statement in (
        "UPDATE public.backfill SET status = 'active' WHERE backfill_id = %(id)s",
        "INSERT INTO public.backfill (source_id, window_field, range_start, range_end,"
        " slice_length, reason, status, requested_by) SELECT source_id, window_field,"
        " range_start, range_end, slice_length, reason, 'active', 'it_bob'"
        " FROM public.backfill WHERE backfill_id = %(id)s",
        "INSERT INTO public.backfill_slice_run (execution_name, backfill_id, slice_number,"
        " attempt, started_at) VALUES ('x', %(id)s, 1, 1, now())",
    ):
        with (
            pytest.raises(psycopg2.errors.InsufficientPrivilege),
            people[ALICE].transaction() as cur,
        ):
            cur.execute(statement, {"id": asked["backfill_id"]})


def test_the_operator_command_refuses_what_the_rules_refuse_before_asking(
    db: Database, make_source: MakeSource
) -> None:
    source_id = make_source()
    future = BackfillRange(WindowField.LAST_MODIFIED, T1, datetime.now(UTC) + DAY, DAY)
    with pytest.raises(OperatorError, match="unknown source 'it-nope'"):
        operator.request_backfill(db, "it-nope", THREE_DAYS, reason="x", now=datetime.now(UTC))
    with pytest.raises(Exception, match="a backfill loads the past"):
        operator.request_backfill(db, source_id, future, reason="x", now=datetime.now(UTC))
    assert operator.list_backfills(db, source_id=source_id, limit=10) == []


# -- running the slices --------------------------------------------------------------------------


def test_three_slices_run_one_at_a_time_beside_the_normal_timeline(
    db: Database, people: People, make_source: MakeSource
) -> None:
    # Given a Sold source (a special flow) that ran before, with a cursor and landed versions
    cursor = datetime(2026, 6, 1, tzinfo=UTC)
    source_id = make_source(runtime_count=5, cursor=cursor, params={"type": "Sold"})
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET landed_since = %s WHERE source_id = %s",
            (cursor - timedelta(minutes=12), source_id),
        )
    before = timeline_of(db, source_id)
    with people[ALICE].transaction() as cur:
        backfill_id = backfills.request(cur, source_id, THREE_DAYS, reason="x")["backfill_id"]
    scheduler = Scheduler(db)
    # (records of the three days, and one on each edge: T1 is in, T1 + 3 days is not)
    stamps = [T1, T1 + DAY / 2, T1 + DAY, T1 + 2 * DAY + DAY / 2, T1 + 3 * DAY]

    # When the scheduler ticks while a Normal run of the source starts at the same tick
    assert scheduler.tick(busy=(source_id,)) == []
    # Then no slice starts; at the next tick the first one does
    [first] = scheduler.tick()
    # (admitted once: until validation sees it, a tick puts its name in the line again, which
    # holds a name once, so nothing starts twice)
    assert scheduler.tick() == []
    # And once it is under way, nothing more starts until it ends
    validate(db, first)
    assert scheduler.tick() == []
    assert operator.list_backfills(db, source_id=source_id, limit=5)[0]["state"] == "running"

    runs = [run_slice(db, first, records_modified(*stamps[:2]))]
    for _ in range(2):
        [following] = scheduler.tick()
        runs.append(run_slice(db, following, records_modified(*stamps)))

    # Then each slice was its own backfill run of its window, in order, and succeeded
    assert [(run["flow_type"], run["status"]) for run in runs] == [("backfill", "succeeded")] * 3
    assert [(run["window_start"], run["window_end"]) for run in runs] == [
        (T1, T1 + DAY),
        (T1 + DAY, T1 + 2 * DAY),
        (T1 + 2 * DAY, T1 + 3 * DAY),
    ]
    # And each landed its window's records only: [start, end), whatever the source sent
    assert [run["records"] for run in runs] == [2, 1, 1]
    assert [run["runtime_count"] for run in runs] == [5, 5, 5]
    # And the source is as it was: cursor, landed_since, params, runtime count, no lock
    assert timeline_of(db, source_id) == before
    assert landed_versions(db, source_id) == 0
    # And the backfill has succeeded; a further tick starts nothing
    [listed] = operator.list_backfills(db, source_id=source_id, limit=5)
    assert (listed["backfill_id"], listed["state"], listed["slices"]) == (
        backfill_id,
        "succeeded",
        "3/3",
    )
    assert scheduler.tick() == []
    shown = operator.show_backfill(db, backfill_id)
    assert [(s["slice"], s["status"], s["records"]) for s in shown["slices"]] == [
        (1, "succeeded", 2),
        (2, "succeeded", 1),
        (3, "succeeded", 1),
    ]


def test_a_backfill_neither_resets_a_special_flow_nor_hides_the_run_that_did(
    db: Database, people: People, make_source: MakeSource, new_execution: Any
) -> None:
    # Given a Sold source whose Sold run has not succeeded yet, and a backfill slice that has
    source_id = make_source(runtime_count=5, cursor=T1 + 60 * DAY, params={"type": "Sold"})
    with people[ALICE].transaction() as cur:
        backfills.request(cur, source_id, THREE_DAYS, reason="x")
    [first] = Scheduler(db).tick()
    run_slice(db, first, [])

    def resets() -> list[Mapping[str, Any]]:
        asked: list[Mapping[str, Any]] = []
        request_resets(datetime.now(UTC), db=db, publish=lambda _kind, d: asked.append(d))
        return [detail for detail in asked if detail["source_id"] == source_id]

    # Then the special flow is not reset by the backfill
    assert resets() == []
    # When the Sold run succeeds, and then another slice does
    sold = new_execution(source_id)
    assert run_slice(db, sold, [])["flow_type"] == "sold"
    [second] = Scheduler(db).tick()
    run_slice(db, second, [])
    # Then the reset is asked for on the Sold run's evidence
    [reset] = resets()
    assert reset["evidence_execution_arn"] == sold.arn


def test_a_failing_slice_is_retried_then_stops_the_backfill_until_a_person_retries(
    db: Database, people: People, make_source: MakeSource
) -> None:
    source_id, backfill_id = asked_for(db, people, make_source)
    scheduler = Scheduler(db)

    # When the first slice's run fails three times
    for _ in range(3):
        [execution] = scheduler.tick()
        validate(db, execution)
        unlock_run(execution.unlock_failed(error="SourceUnavailable"), db=db, respecs=RESPECS)

    # Then the backfill stopped, naming the slice's last run, and starts nothing more
    [listed] = operator.list_backfills(db, source_id=source_id, limit=5)
    assert (listed["state"], listed["failures"], listed["current_run_status"]) == (
        "failed",
        3,
        "failed",
    )
    assert scheduler.tick() == []
    # When bob retries it, Then the same slice starts again (its fourth attempt)
    decided = operator.decide_backfill(people[BOB], backfill_id, "retried", reason=None)
    assert (decided["state"], decided["retried_by"]) == ("ready", BOB)
    [again] = scheduler.tick()
    assert run_slice(db, again, [])["window_start"] == T1


def test_cancelling_a_backfill_stops_its_slice_under_way_and_starts_no_more(
    db: Database, people: People, make_source: MakeSource
) -> None:
    source_id, backfill_id = asked_for(db, people, make_source)
    scheduler = Scheduler(db)
    [running] = scheduler.tick()
    validate(db, running)  # slice 1 under way

    # When bob cancels the backfill
    cancelled = operator.decide_backfill(people[BOB], backfill_id, "cancelled", reason="oops")
    # Then its running slice is asked to stop, and no slice starts any more
    assert (cancelled["state"], cancelled["stopping_run"]) == ("cancelled", running.name)
    row = run_row(db, running.arn)
    assert row is not None and row["cancel_requested_by"] == BOB
    assert scheduler.tick() == []
    # (its download notices at its next heartbeat, and the run ends cancelled)
    unlock_run(running.unlock_failed(error="RunCancelled"), db=db, respecs=RESPECS)
    assert run_row(db, running.arn)["status"] == "cancelled"  # type: ignore[index]

    # And a slice execution started just before the cancel is cancelled when it is validated
    with db.transaction() as cur:
        backfills.record_attempt(
            cur,
            backfill_id=backfill_id,
            slice_number=2,
            attempt=1,
            execution_name=(late := f"{source_id}-late-{uuid.uuid4().hex[:6]}"),
            started_at=datetime.now(UTC),
        )
    with pytest.raises(Exception, match=f"backfill {backfill_id} of source .* is cancelled"):
        validate(db, Execution(source_id, late))
    source = get_source(db, source_id)
    assert source is not None and source["locked_by"] is None
    assert [run["execution_name"] for run in runs_of(db, source_id)] == [running.name]
