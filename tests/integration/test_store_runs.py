"""shared.store.runs against a real PostgreSQL: the lock and run protocol's fences, called
directly. (The services' tests drive the same functions through validation, download and
unlocking.)"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.download.adapters import claim_download
from shared.errors import LockLost
from shared.rules.flows import Window, WindowField
from shared.store import runs
from shared.store.db import Database, session_login
from shared.store.runs import RunStatus
from shared.store.sources import get_source
from tests.integration.conftest import (
    CURSOR,
    LEASE,
    Execution,
    MakeSource,
    NewExecution,
    expire_lease,
    lock_of,
    new_claim,
    run_row,
    source_row_text,
    validate,
)

WINDOW = Window(WindowField.LAST_MODIFIED, CURSOR, CURSOR + timedelta(days=1), False)


def take_and_start(db: Database, execution: Execution, *, expires_at: datetime) -> None:
    """Given: `execution` took the source's lock until `expires_at` and started its run."""
    with db.transaction() as cur:
        runs.take_lock(
            cur, execution.source_id, execution.arn, runtime_count=2, expires_at=expires_at
        )
        runs.start_run(
            cur,
            execution.validation(),
            flow_type="normal",
            flow_params={"flow_type": "Normal"},
            window=WINDOW,
            runtime_count=2,
        )


def live() -> datetime:
    return datetime.now(UTC) + LEASE


def expired() -> datetime:
    return datetime.now(UTC) - timedelta(minutes=1)


@pytest.fixture
def holder(db: Database, make_source: MakeSource, new_execution: NewExecution) -> Execution:
    """An execution holding a live lease on a source of its own, its run started."""
    execution = new_execution(make_source(runtime_count=1, cursor=CURSOR))
    take_and_start(db, execution, expires_at=live())
    return execution


def test_the_statuses_are_the_ones_the_ledger_allows(db: Database) -> None:
    # Given the ledger's CHECK constraint on status
    with db.transaction() as cur:
        cur.execute(
            "SELECT pg_get_constraintdef(oid) AS definition FROM pg_constraint"
            " WHERE conname = 'source_run_status_check'"
        )
        definition = cur.fetchone()["definition"]
    # Then every status it allows is a RunStatus, and every RunStatus is allowed
    assert set(re.findall(r"'(\w+)'::text", definition)) == {status.value for status in RunStatus}
    # And the open ones are the two before a run ends
    assert runs.OPEN_RUN_STATUSES == (RunStatus.RUNNING, RunStatus.DOWNLOADED)


@pytest.mark.parametrize(("lease", "decision"), [(live, "skip"), (expired, "run")])
def test_a_taken_lock_refuses_another_execution_while_its_lease_is_live(
    db: Database,
    make_source: MakeSource,
    new_execution: NewExecution,
    lease: Callable[[], datetime],
    decision: str,
) -> None:
    # Given execution A took the lock, with a live or an expired lease
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    first, second = new_execution(source_id), new_execution(source_id)
    take_and_start(db, first, expires_at=lease())

    # When execution B validates the source
    result = validate(db, second)

    # Then B is refused while A's lease is live, and takes the lock over once it has expired
    assert result["decision"] == decision
    assert lock_of(db, source_id)[0] == (first.arn if decision == "skip" else second.arn)


# A lock write by an execution that does not hold the lock: (cursor, source, execution) -> bool
LOCK_WRITES: dict[str, Callable[[Any, str, str], bool]] = {
    "extend": lambda cur, source_id, arn: runs.extend_lock(cur, source_id, arn, live() + LEASE),
    "renew": lambda cur, source_id, arn: runs.renew_lock(cur, source_id, arn, LEASE * 4),
    "release": runs.release_lock,
}


@pytest.mark.parametrize("write", LOCK_WRITES.values(), ids=LOCK_WRITES.keys())
def test_a_lock_write_by_another_execution_is_refused_and_changes_nothing(
    db: Database,
    holder: Execution,
    new_execution: NewExecution,
    write: Callable[[Any, str, str], bool],
) -> None:
    intruder = new_execution(holder.source_id)
    held = source_row_text(db, holder.source_id)

    # When another execution extends, renews or releases the holder's lock
    with db.transaction() as cur:
        written = write(cur, holder.source_id, intruder.arn)

    # Then it is refused, and the source row is exactly as it was
    assert not written
    assert source_row_text(db, holder.source_id) == held


def test_the_holder_extends_its_lease_and_never_shortens_it(
    db: Database, holder: Execution
) -> None:
    expires = lock_of(db, holder.source_id)[2]

    # When the holder extends it to an earlier time, Then the lease stays as long as it was
    with db.transaction() as cur:
        assert runs.extend_lock(cur, holder.source_id, holder.arn, expires - LEASE)
    assert lock_of(db, holder.source_id)[2] == expires

    # When the holder extends it to a later time, Then it lasts until then
    with db.transaction() as cur:
        assert runs.extend_lock(cur, holder.source_id, holder.arn, expires + LEASE)
    assert lock_of(db, holder.source_id)[2] == expires + LEASE


def test_the_holder_renews_its_lease_from_now_and_releases_it(
    db: Database, holder: Execution
) -> None:
    # When the holder renews its lease, Then it lasts the lease from now
    with db.transaction() as cur:
        assert runs.renew_lock(cur, holder.source_id, holder.arn, LEASE * 4)
    assert lock_of(db, holder.source_id)[2] > datetime.now(UTC) + LEASE * 3

    # When the holder releases it, Then the source is unlocked
    with db.transaction() as cur:
        assert runs.release_lock(cur, holder.source_id, holder.arn)
    assert lock_of(db, holder.source_id) == (None, None, None)


def test_only_the_holder_finishes_its_run(
    db: Database, holder: Execution, new_execution: NewExecution
) -> None:
    # Given another execution's run, started while the holder holds the source
    intruder = new_execution(holder.source_id)
    with db.transaction() as cur:
        runs.open_run(cur, intruder.validation())
    held, intruders_run = source_row_text(db, holder.source_id), run_row(db, intruder.arn)
    moved = CURSOR + timedelta(hours=6)

    # When that execution finishes its run, Then it is refused, and its transaction changes
    # neither the cursor nor its run
    with pytest.raises(LockLost), db.transaction() as cur:
        runs.finish_run(
            cur,
            holder.source_id,
            intruder.arn,
            cursor_before=CURSOR,
            cursor_after=moved,
            respecs_rows=None,
        )
    assert source_row_text(db, holder.source_id) == held
    assert run_row(db, intruder.arn) == intruders_run

    # When the holder finishes its run, Then the cursor moves and the run has succeeded
    with db.transaction() as cur:
        ended = runs.finish_run(
            cur,
            holder.source_id,
            holder.arn,
            cursor_before=CURSOR,
            cursor_after=moved,
            respecs_rows=None,
        )
    assert (ended["status"], ended["cursor_before"], ended["cursor_after"]) == (
        RunStatus.SUCCEEDED,
        CURSOR,
        moved,
    )
    source = get_source(db, holder.source_id)
    assert source is not None
    assert (source["last_modified_date"], source["locked_by"]) == (moved, holder.arn)


def test_a_download_is_recorded_only_while_its_execution_holds_the_lock(
    db: Database, holder: Execution, new_execution: NewExecution
) -> None:
    # Given the holder claimed its download, then lost its lease to another execution
    claim = new_claim()
    with db.transaction() as cur:
        assert claim_download(cur, holder.arn, claim) is None
    result = {
        "execution_arn": holder.arn,
        "records": 3,
        "bytes": 30,
        "objects": 1,
        "manifest_key": "m.json",
        "max_last_modified": CURSOR,
        "malformed_records": 0,
        "late_records": 0,
        "duplicates_skipped": 0,
        "future_records": 0,
    }
    expire_lease(db, holder.source_id)
    take_and_start(db, new_execution(holder.source_id), expires_at=live())

    # When the holder records its download, Then nothing is recorded: the run still runs
    with db.transaction() as cur:
        assert runs.mark_downloaded(cur, result, claim.attempt) is None
    run = run_row(db, holder.arn)
    assert run is not None and run["status"] == RunStatus.RUNNING


def test_a_failure_noted_after_the_run_ended_keeps_its_outcome(
    db: Database, holder: Execution
) -> None:
    # Given the holder's run ended failed
    with db.transaction() as cur:
        runs.note_failure(
            cur, holder.validation(), step="Download", error_name="Boom", detail="first"
        )
        runs.fail_run(cur, holder.arn, failed_step="Download", error="Boom", cause="")
    ended = run_row(db, holder.arn)

    # When another failure is noted for it (a late delivery)
    with db.transaction() as cur:
        runs.note_failure(
            cur, holder.validation(), step="Unlock", error_name="Other", detail="late"
        )

    # Then the ledger row is as it ended
    assert ended is not None and ended["status"] == RunStatus.FAILED
    assert run_row(db, holder.arn) == ended


def test_a_cancel_is_asked_once_of_an_open_run_and_ends_it_cancelled(
    db: Database, holder: Execution
) -> None:
    # When an operator asks to cancel the run, twice
    with db.transaction() as cur:
        first = runs.request_cancel(cur, holder.name, reason="wrong window")
        second = runs.request_cancel(cur, holder.name, reason="again")

    # Then the first request is recorded, the second finds nothing left to ask
    assert first is not None and first["status"] == RunStatus.RUNNING
    assert second is None
    with db.transaction() as cur:
        cancelled = runs.cancellation(cur, holder.arn)
        login = session_login(cur)
    # (by the login that asked: the database records it, whatever the writer says)
    assert cancelled is not None and str(cancelled) == f"cancelled by {login}: wrong window"

    # And the run's failure ends it cancelled; a cancel of an ended run finds nothing
    with db.transaction() as cur:
        ended = runs.fail_run(cur, holder.arn, failed_step="Download", error="Boom", cause="")
        assert runs.request_cancel(cur, holder.arn, reason="late") is None
    assert ended["status"] == RunStatus.CANCELLED
