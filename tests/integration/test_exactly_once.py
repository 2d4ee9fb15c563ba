"""DESIGN.md "Delivery guarantees" against a real PostgreSQL: a duplicate message neither
counts a run twice, nor downloads twice, nor advances a cursor twice, nor releases someone
else's lock; a permanent error changes nothing.

Each test calls the services' logic functions directly, as their handlers would, and checks
the end state of the source row and the run ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from services.download.adapters import claim_download
from services.download.domain import DownloadProgress
from services.download.service import LockLost as DownloadLockLost
from services.download.service import RunNotStarted, lease_renewal
from services.unlocking.domain import LockLost as UnlockLockLost
from services.unlocking.domain import RunNotDownloaded
from services.unlocking.metrics import RunEnded
from services.unlocking.service import unlock_run
from services.validation.domain import SourceNotFound
from shared.connectors.base import UnsupportedSourceType
from shared.errors import PermanentError
from shared.rules.flows import DEFAULT_LATENESS_ALLOWANCE, InvalidFlowParams, overlap
from shared.store.db import Database
from shared.store.runs import failure_recorder
from shared.store.sources import get_source
from shared.timefmt import isoformat
from tests.builders import records_modified
from tests.fakes import FakeConnector, FakeSink
from tests.integration.conftest import (
    CURSOR,
    LEASE,
    RESPECS,
    MakeSource,
    NewExecution,
    download,
    downloaded_run,
    expire_lease,
    flow_history_of,
    lock_of,
    new_claim,
    run_row,
    runs_of,
    source_row_text,
    validate,
)

# -- validation -----------------------------------------------------------------------------


def test_duplicate_validation_returns_the_first_decision_and_counts_the_run_once(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a source that has never run
    source_id = make_source(runtime_count=0, params=None)
    execution = new_execution(source_id)

    # When the same validation request is delivered twice
    first = validate(db, execution)
    after_first = source_row_text(db, source_id)
    second = validate(db, execution)

    # Then both deliveries get the same decision: the first run, backdated
    assert second == first
    assert first["decision"] == "run"
    assert first["runtime_count"] == 1
    assert first["plan"]["flow_type"] == "full_load"
    assert first["plan"]["window_start_inclusive"] is True
    # And the source was changed by the first delivery only
    assert source_row_text(db, source_id) == after_first
    source = get_source(db, source_id)
    assert source is not None
    assert source["runtime_count"] == 1
    assert source["locked_by"] == execution.arn
    assert source["batch_execution_params"] == {"type": "Full Load"}
    # And the first-run rule wrote the params once, with one history row
    history = flow_history_of(db, source_id)
    assert len(history) == 1
    assert history[0]["from_params"] is None
    assert history[0]["to_params"] == {"type": "Full Load"}
    assert history[0]["reason"].endswith(execution.name)
    # And the ledger holds one running row for the execution
    runs = runs_of(db, source_id)
    assert [(run["execution_arn"], run["status"]) for run in runs] == [(execution.arn, "running")]
    assert runs[0]["flow_type"] == "full_load"
    assert runs[0]["runtime_count"] == 1
    assert runs[0]["cursor_before"] is None


def test_a_second_execution_is_skipped_while_the_first_holds_the_lock(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given execution A validated a source and holds its lock
    source_id = make_source(runtime_count=4, cursor=CURSOR)
    first, second = new_execution(source_id), new_execution(source_id)
    assert validate(db, first)["decision"] == "run"
    held = source_row_text(db, source_id)

    # When another execution B validates the same source (twice: a duplicate delivery)
    skipped = validate(db, second)
    again = validate(db, second)

    # Then B is skipped because the source is locked, by A
    assert skipped["decision"] == "skip"
    assert skipped["reason"] == "SourceLocked"
    assert first.arn in skipped["detail"]
    assert again == skipped
    # And A's lock, the run count and everything else on the source are untouched
    assert source_row_text(db, source_id) == held
    assert lock_of(db, source_id)[0] == first.arn
    # And the ledger has A running and B skipped
    skip_row = run_row(db, second.arn)
    assert skip_row is not None
    assert (skip_row["status"], skip_row["error"]) == ("skipped", "SourceLocked")
    assert skip_row["finished_at"] is not None
    assert {run["execution_arn"]: run["status"] for run in runs_of(db, source_id)} == {
        first.arn: "running",
        second.arn: "skipped",
    }


def test_an_expired_lease_is_taken_over_by_a_new_execution(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given execution A holds the lock but its lease ran out
    source_id = make_source(runtime_count=4, cursor=CURSOR)
    stale, fresh = new_execution(source_id), new_execution(source_id)
    validate(db, stale)
    expire_lease(db, source_id)

    # When a new execution validates the source
    result = validate(db, fresh)

    # Then it runs and holds a fresh lease; the run is counted
    assert result["decision"] == "run"
    assert result["runtime_count"] == 6
    locked_by, locked_at, expires = lock_of(db, source_id)
    assert locked_by == fresh.arn
    assert expires > datetime.now(UTC) + LEASE - timedelta(minutes=1)
    assert locked_at <= datetime.now(UTC)
    # And its window starts at the untouched cursor, less the overlap
    assert result["plan"]["window_start"] == isoformat(CURSOR - overlap(DEFAULT_LATENESS_ALLOWANCE))
    assert result["plan"]["window_start_inclusive"] is False


def test_an_inactive_source_is_skipped_and_left_as_it_is(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given an inactive source
    source_id = make_source(runtime_count=2, cursor=CURSOR, is_active=False)
    execution = new_execution(source_id)
    before = source_row_text(db, source_id)

    # When it is validated twice
    first, second = validate(db, execution), validate(db, execution)

    # Then both deliveries skip it, the run is not counted and nothing is locked
    assert first == second
    assert (first["decision"], first["reason"]) == ("skip", "SourceInactive")
    assert source_row_text(db, source_id) == before
    assert [run["status"] for run in runs_of(db, source_id)] == ["skipped"]


def _unknown_source(make_source: MakeSource) -> str:
    return "it-never-registered"


def _malformed_params(make_source: MakeSource) -> str:
    return make_source(runtime_count=3, cursor=CURSOR, params={"type": "Weekly"})


def _unsupported_type(make_source: MakeSource) -> str:
    return make_source(runtime_count=3, cursor=CURSOR, source_type="ftp")


@pytest.mark.parametrize(
    ("given", "error", "error_name"),
    [
        (_unknown_source, SourceNotFound, "SourceNotFound"),
        (_malformed_params, InvalidFlowParams, "InvalidFlowParams"),
        (_unsupported_type, UnsupportedSourceType, "UnsupportedSourceType"),
    ],
    ids=["unknown-source", "malformed-params", "unsupported-source-type"],
)
def test_a_permanent_validation_error_changes_nothing_and_repeats(
    db: Database,
    make_source: MakeSource,
    new_execution: NewExecution,
    given: Callable[[MakeSource], str],
    error: type[PermanentError],
    error_name: str,
) -> None:
    # Given a source validation must refuse
    source_id = given(make_source)
    execution = new_execution(source_id)
    before = source_row_text(db, source_id)
    history_before = flow_history_of(db, source_id)

    # When it is validated
    with pytest.raises(error) as first:
        validate(db, execution)

    # Then the source row is exactly as it was, and nothing new is in the ledger or the history
    assert source_row_text(db, source_id) == before
    assert run_row(db, execution.arn) is None
    assert flow_history_of(db, source_id) == history_before
    assert first.value.error_name == error_name

    # When it is delivered again
    with pytest.raises(error) as second:
        validate(db, execution)
    # Then it fails the same way
    assert str(second.value) == str(first.value)

    # When the handler has recorded the failure (as it does) and the message comes again
    failure_recorder(db, "Validate")(execution.validation(), error_name, str(first.value))
    with pytest.raises(PermanentError) as recorded:
        validate(db, execution)

    # Then the recorded failure is reported again, and the source is still untouched
    assert recorded.value.error_name == error_name
    assert str(recorded.value) == str(first.value)
    assert source_row_text(db, source_id) == before
    row = run_row(db, execution.arn)
    assert row is not None
    assert (row["status"], row["failed_step"], row["error"]) == ("running", "Validate", error_name)


# -- download -------------------------------------------------------------------------------


def test_duplicate_download_returns_the_recorded_result_without_downloading_again(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a validated run over five records, written two to a part
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    plan = validate(db, execution)["plan"]
    newest = CURSOR + timedelta(days=3)
    connector = FakeConnector(
        records_modified(
            CURSOR + timedelta(days=1),
            newest,
            CURSOR + timedelta(hours=5),
            CURSOR + timedelta(days=2),
            CURSOR + timedelta(minutes=1),
        )
    )

    # When the download request is delivered twice
    first = download(db, execution, plan, connector, sink, part_max_records=2)
    writes_after_first = sink.writes
    second = download(db, execution, plan, connector, sink, part_max_records=2)

    # Then the second delivery returns the first's result without asking the source again
    assert second == first
    assert len(connector.windows) == 1
    assert connector.yielded == 5
    assert sink.writes == writes_after_first == 4
    # And the window asked for is the one validation froze
    window = connector.windows[0]
    assert (isoformat(window.start), isoformat(window.end)) == (
        plan["window_start"],
        plan["window_end"],
    )
    assert window.start_inclusive is False
    # And the records were split into three parts under the execution's prefix
    prefix = f"{source_id}/{execution.name}/"
    part_keys = [f"{prefix}part-{index:05d}.jsonl.gz" for index in range(3)]
    assert sorted(sink.parts) == part_keys
    assert [len(sink.parts[key]) for key in part_keys] == [2, 2, 1]
    # And the manifest lists the three objects with their counts and checksums
    manifest_key = f"{prefix}manifest.json"
    assert list(sink.manifests) == [manifest_key]
    manifest = sink.manifests[manifest_key]
    assert [obj["key"] for obj in manifest["objects"]] == part_keys
    assert [obj["records"] for obj in manifest["objects"]] == [2, 2, 1]
    assert all(len(obj["sha256"]) == 64 for obj in manifest["objects"])
    assert manifest["records"] == 5
    assert manifest["bytes"] == sum(obj["bytes"] for obj in manifest["objects"])
    assert manifest["max_last_modified"] == isoformat(newest)
    assert manifest["execution_arn"] == execution.arn
    # And the result and the ledger agree
    assert first == {
        "source_id": source_id,
        "execution_arn": execution.arn,
        "records": 5,
        "bytes": manifest["bytes"],
        "objects": 3,
        "manifest_key": manifest_key,
        "max_last_modified": isoformat(newest),
        "malformed_records": 0,
        "late_records": 0,
        "duplicates_skipped": 0,
        "future_records": 0,
    }
    row = run_row(db, execution.arn)
    assert row is not None
    assert row["status"] == "downloaded"
    assert (row["records"], row["bytes"], row["objects"]) == (5, manifest["bytes"], 3)
    assert row["manifest_key"] == manifest_key
    assert row["max_last_modified"] == newest
    # And the source is still locked by the run, its cursor unmoved
    source = get_source(db, source_id)
    assert source is not None
    assert (source["locked_by"], source["last_modified_date"]) == (execution.arn, CURSOR)


def test_an_empty_window_is_recorded_as_zero_records_and_no_objects(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a validated run whose window holds no records
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    plan = validate(db, execution)["plan"]

    # When it is downloaded
    result = download(db, execution, plan, FakeConnector([]), sink)

    # Then the ledger records an empty download and the manifest is still written
    assert (result["records"], result["objects"], result["bytes"]) == (0, 0, 0)
    assert result["max_last_modified"] is None
    assert sink.parts == {}
    assert sink.manifests[result["manifest_key"]]["objects"] == []
    row = run_row(db, execution.arn)
    assert row is not None
    assert (row["status"], row["records"], row["max_last_modified"]) == ("downloaded", 0, None)


def test_malformed_rows_reach_the_result_the_ledger_and_the_manifest(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a source whose connector could not load two rows of the window
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    plan = validate(db, execution)["plan"]
    connector = FakeConnector(records_modified(CURSOR + timedelta(days=1)))
    connector.malformed.add("s3://drops/a.csv line 3", "has no last_modified")
    connector.malformed.add("s3://drops/a.csv line 9", "is not UTF-8")

    # When it is downloaded
    result = download(db, execution, plan, connector, sink)

    # Then the count is reported with the result and in the ledger, and described in the manifest
    assert (result["records"], result["malformed_records"]) == (1, 2)
    row = run_row(db, execution.arn)
    assert row is not None
    assert row["malformed_records"] == 2
    assert sink.manifests[result["manifest_key"]]["malformed_records"] == {
        "count": 2,
        "examples": [
            "s3://drops/a.csv line 3: has no last_modified",
            "s3://drops/a.csv line 9: is not UTF-8",
        ],
    }


def test_download_without_the_lock_is_refused_and_records_nothing(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given execution A validated, but its lease expired and B took the source over
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    stale, fresh = new_execution(source_id), new_execution(source_id)
    plan = validate(db, stale)["plan"]
    expire_lease(db, source_id)
    validate(db, fresh)
    source_before, run_before = source_row_text(db, source_id), run_row(db, stale.arn)
    connector = FakeConnector(records_modified(CURSOR + timedelta(days=1)))

    # When A's download request arrives
    with pytest.raises(DownloadLockLost):
        download(db, stale, plan, connector, sink)

    # Then nothing is downloaded or written, and neither the ledger nor the source changed
    assert connector.windows == []
    assert sink.writes == 0
    assert run_row(db, stale.arn) == run_before
    assert source_row_text(db, source_id) == source_before


def test_download_of_a_skipped_or_unknown_execution_is_refused(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given A holds the source, B was skipped, and C never validated
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    holder, skipped, unknown = (new_execution(source_id) for _ in range(3))
    plan = validate(db, holder)["plan"]
    assert validate(db, skipped)["decision"] == "skip"
    before = source_row_text(db, source_id)
    connector = FakeConnector(records_modified(CURSOR + timedelta(days=1)))

    # When B and C ask to download
    with pytest.raises(DownloadLockLost):
        download(db, skipped, plan, connector, sink)
    with pytest.raises(RunNotStarted):
        download(db, unknown, plan, connector, sink)

    # Then nothing was downloaded and nothing changed
    assert connector.windows == []
    assert sink.writes == 0
    assert source_row_text(db, source_id) == before
    skip_row = run_row(db, skipped.arn)
    assert skip_row is not None
    assert skip_row["status"] == "skipped"
    assert run_row(db, unknown.arn) is None


def test_a_lock_taken_over_during_the_download_is_not_recorded(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given execution A is downloading, and halfway through its lease expires and B takes over
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    stale, fresh = new_execution(source_id), new_execution(source_id)
    plan = validate(db, stale)["plan"]

    def take_over(yielded: int) -> None:
        if yielded == 2:
            expire_lease(db, source_id)
            assert validate(db, fresh)["decision"] == "run"

    connector = FakeConnector(
        records_modified(*(CURSOR + timedelta(hours=h) for h in range(1, 4))), on_record=take_over
    )

    # When A's download finishes
    with pytest.raises(DownloadLockLost):
        download(db, stale, plan, connector, sink, part_max_records=1)

    # Then its objects are not taken up: A's run is still running with nothing recorded
    row = run_row(db, stale.arn)
    assert row is not None
    assert (row["status"], row["records"], row["manifest_key"]) == ("running", None, None)
    # And B's lock is untouched
    assert lock_of(db, source_id)[0] == fresh.arn


def test_a_heartbeat_after_the_lock_is_gone_writes_nothing(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given execution A claimed its download, then lost the lock to B
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    stale, fresh = new_execution(source_id), new_execution(source_id)
    validate(db, stale)
    claim = new_claim()
    with db.transaction() as cur:
        assert claim_download(cur, stale.arn, claim) is None
    expire_lease(db, source_id)
    validate(db, fresh)
    before = run_row(db, stale.arn)

    # When A's download heartbeats with progress to report
    renewed = lease_renewal(db, source_id, stale.arn, LEASE, claim, DownloadProgress(7, 700))

    # Then it is told the lock is lost, and A's ledger row was not written: no progress, no
    # renewed claim
    assert renewed is False
    assert run_row(db, stale.arn) == before
    assert lock_of(db, source_id)[0] == fresh.arn


def test_the_heartbeat_renews_the_lease_and_stops_a_download_whose_lock_was_taken(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given execution A is downloading with a heartbeat on every record
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    stale, fresh = new_execution(source_id), new_execution(source_id)
    plan = validate(db, stale)["plan"]
    beats: list[tuple[int, bool, datetime]] = []
    claim = new_claim()

    def renew() -> bool:
        renewed = lease_renewal(db, source_id, stale.arn, LEASE, claim)
        beats.append((connector.yielded, renewed, lock_of(db, source_id)[2]))
        return renewed

    def take_over(yielded: int) -> None:
        if yielded == 3:
            expire_lease(db, source_id)
            validate(db, fresh)

    connector = FakeConnector(
        records_modified(*(CURSOR + timedelta(hours=h) for h in range(1, 6))), on_record=take_over
    )

    # When the lock is taken over at the third record
    with pytest.raises(DownloadLockLost):
        download(
            db, stale, plan, connector, sink, part_max_records=100, renew_lease=renew, claim=claim
        )

    # Then every beat before the takeover renewed A's lease (each expiry at least as late as
    # the one before), and the first beat after it stopped the download
    assert connector.yielded == 3
    *renewals, last = beats
    assert renewals and all(renewed for _, renewed, _ in renewals)
    assert all(yielded < 3 for yielded, _, _ in renewals)
    expiries = [expires for _, _, expires in renewals]
    assert expiries == sorted(expiries)
    assert expiries[-1] > datetime.now(UTC) + LEASE - timedelta(minutes=1)
    assert last[:2] == (3, False)
    # And B's lock is intact, A's run recorded nothing and nothing was written
    assert lock_of(db, source_id)[0] == fresh.arn
    assert sink.writes == 0
    row = run_row(db, stale.arn)
    assert row is not None
    assert (row["status"], row["records"]) == ("running", None)


# -- unlocking ------------------------------------------------------------------------------


def test_duplicate_unlock_success_moves_the_cursor_and_releases_the_lock_once(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a downloaded run whose newest record is three days after the cursor, and one
    # stamped at the cursor (late: only the overlap found it)
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    newest = CURSOR + timedelta(days=3)
    downloaded_run(
        db, execution, records_modified(CURSOR + timedelta(days=1), newest, CURSOR), sink
    )

    # When the unlock-success request is delivered twice
    first = unlock_run(execution.unlock_succeeded(), db=db, respecs=RESPECS)
    source_after_first, run_after_first = source_row_text(db, source_id), run_row(db, execution.arn)
    second = unlock_run(execution.unlock_succeeded(), db=db, respecs=RESPECS)

    # Then the first moved the cursor to the newest record and released the lock
    assert first == {
        "source_id": source_id,
        "execution_arn": execution.arn,
        "status": "succeeded",
        "lock_released": True,
        "cursor_before": isoformat(CURSOR),
        "cursor_after": isoformat(newest),
        "flow_type": "normal",
        "error_detail": None,
        "late_records": 1,
        "duplicates_skipped": 0,
        "future_records": 0,
        "warnings": [],
    }
    source = get_source(db, source_id)
    assert source is not None
    assert source["last_modified_date"] == newest
    assert (source["locked_by"], source["locked_at"], source["lock_expires_at"]) == (
        None,
        None,
        None,
    )
    assert source["runtime_count"] == 2
    row = run_row(db, execution.arn)
    assert row is not None
    assert (row["status"], row["cursor_before"], row["cursor_after"]) == (
        "succeeded",
        CURSOR,
        newest,
    )
    assert row["finished_at"] is not None
    # And the second returned the same outcome, released nothing and changed nothing
    assert second == {**first, "lock_released": False}
    assert source_row_text(db, source_id) == source_after_first
    assert run_row(db, execution.arn) == run_after_first


def test_a_run_is_reported_once_by_flow_and_source_type_with_what_it_loaded(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a downloaded run of three records
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    downloaded_run(
        db, execution, records_modified(*(CURSOR + timedelta(days=d) for d in (1, 2, 3))), sink
    )
    ended: list[RunEnded] = []

    # When its unlock-success request is delivered twice
    for _ in range(2):
        unlock_run(execution.unlock_succeeded(), db=db, respecs=RESPECS, on_run_ended=ended.append)

    # Then the run's end is reported once, with its flow, source type and load
    [run] = ended
    assert (run.status, run.flow_type, run.source_type) == ("succeeded", "normal", "http_api")
    assert (run.records, run.failed_step) == (3, None)
    assert run.bytes is not None and run.bytes > 0
    assert run.duration_seconds >= 0


def test_a_failed_run_is_reported_with_the_step_that_failed(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a run whose validation failed before it recorded anything
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    ended: list[RunEnded] = []

    # When the state machine ends it with a failure
    unlock_run(
        execution.unlock_failed(step="Validate", error="SourceNotFound"),
        db=db,
        respecs=RESPECS,
        on_run_ended=ended.append,
    )

    # Then its end is reported as a failure of that step, with no flow decided
    [run] = ended
    assert (run.status, run.failed_step, run.flow_type) == ("failed", "Validate", None)
    assert run.source_type == "http_api"


def test_a_duplicate_unlock_of_a_cancelled_run_changes_nothing_and_reports_once(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a run that ended cancelled
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    cancelled = execution.unlock_failed(step="Download", error="RunCancelled")
    ended: list[RunEnded] = []
    first = unlock_run(cancelled, db=db, respecs=RESPECS, on_run_ended=ended.append)
    run_after_first = run_row(db, execution.arn)

    # When the same unlock request is delivered again
    second = unlock_run(cancelled, db=db, respecs=RESPECS, on_run_ended=ended.append)

    # Then the run stays as the first unlock ended it, and its end is reported once
    assert first["status"] == "cancelled"
    assert second == {**first, "lock_released": False}
    assert run_row(db, execution.arn) == run_after_first
    [run] = ended
    assert run.status == "cancelled"


def test_the_cursor_never_moves_backwards(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a run that loaded only records older than the source's cursor
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    older = CURSOR - timedelta(days=10)
    result = downloaded_run(
        db, execution, records_modified(older, CURSOR - timedelta(days=2)), sink
    )
    assert result["max_last_modified"] == isoformat(CURSOR - timedelta(days=2))

    # When it ends successfully
    unlocked = unlock_run(execution.unlock_succeeded(), db=db, respecs=RESPECS)

    # Then the cursor stays where it was
    assert unlocked["cursor_before"] == unlocked["cursor_after"] == isoformat(CURSOR)
    source = get_source(db, source_id)
    assert source is not None
    assert source["last_modified_date"] == CURSOR
    assert source["locked_by"] is None


def test_a_run_that_loaded_nothing_leaves_the_cursor_and_a_first_cursor_is_set(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a source with a cursor whose run loaded nothing, and one without a cursor
    with_cursor = make_source(runtime_count=1, cursor=CURSOR)
    without_cursor = make_source(runtime_count=1, cursor=None)
    empty_run, first_run = new_execution(with_cursor), new_execution(without_cursor)
    downloaded_run(db, empty_run, [], FakeSink())
    downloaded_run(db, first_run, records_modified(CURSOR), FakeSink())

    # When both end successfully
    empty = unlock_run(empty_run.unlock_succeeded(), db=db, respecs=RESPECS)
    first = unlock_run(first_run.unlock_succeeded(), db=db, respecs=RESPECS)

    # Then the empty run kept the cursor, and the first run set it
    assert empty["cursor_before"] == empty["cursor_after"] == isoformat(CURSOR)
    assert (first["cursor_before"], first["cursor_after"]) == (None, isoformat(CURSOR))
    with_row, without_row = get_source(db, with_cursor), get_source(db, without_cursor)
    assert with_row is not None and without_row is not None
    assert with_row["last_modified_date"] == without_row["last_modified_date"] == CURSOR


def test_a_sold_run_leaves_the_last_modified_cursor_untouched(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a source on the Sold flow that has run before
    source_id = make_source(runtime_count=3, cursor=CURSOR, params={"type": "Sold"})
    execution = new_execution(source_id)
    validated = validate(db, execution)
    assert validated["plan"]["flow_type"] == "sold"
    assert validated["plan"]["window_field"] == "sold_date"
    ledger = run_row(db, execution.arn)
    assert ledger is not None
    assert ledger["flow_type"] == "sold"
    # And its download loaded records modified after the cursor
    newer = CURSOR + timedelta(days=30)
    download(db, execution, validated["plan"], FakeConnector(records_modified(newer)), sink)

    # When it ends successfully
    unlocked = unlock_run(execution.unlock_succeeded(), db=db, respecs=RESPECS)

    # Then the lock is released but the last-modified cursor has not moved
    assert unlocked["lock_released"] is True
    assert unlocked["cursor_before"] == unlocked["cursor_after"] == isoformat(CURSOR)
    source = get_source(db, source_id)
    assert source is not None
    assert source["last_modified_date"] == CURSOR
    assert source["locked_by"] is None
    assert source["batch_execution_params"] == {"type": "Sold"}
    row = run_row(db, execution.arn)
    assert row is not None
    # (a sold window says nothing of last-modified stamps: it reports no newest one)
    assert (row["status"], row["max_last_modified"], row["cursor_after"]) == (
        "succeeded",
        None,
        CURSOR,
    )


def test_an_unlock_failure_from_another_execution_releases_nothing(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given execution A holds the source
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    holder, intruder = new_execution(source_id), new_execution(source_id)
    validate(db, holder)
    held = source_row_text(db, source_id)

    # When execution B ends with a failure
    result = unlock_run(
        intruder.unlock_failed(step="Validate", error="States.Timeout"), db=db, respecs=RESPECS
    )

    # Then B's run is failed, but A's lock and the source are untouched
    assert (result["status"], result["lock_released"]) == ("failed", False)
    assert source_row_text(db, source_id) == held
    assert lock_of(db, source_id)[0] == holder.arn
    holder_row = run_row(db, holder.arn)
    assert holder_row is not None
    assert holder_row["status"] == "running"


def test_a_late_unlock_success_after_a_takeover_moves_nothing(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given execution A downloaded, then lost its lease to execution B
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    late, current = new_execution(source_id), new_execution(source_id)
    downloaded_run(db, late, records_modified(CURSOR + timedelta(days=5)), sink)
    expire_lease(db, source_id)
    assert validate(db, current)["decision"] == "run"
    taken = source_row_text(db, source_id)

    # When A's unlock-success arrives
    with pytest.raises(UnlockLockLost):
        unlock_run(late.unlock_succeeded(), db=db, respecs=RESPECS)

    # Then the cursor has not moved, B still holds the lock, A's run is still downloaded
    assert source_row_text(db, source_id) == taken
    late_row = run_row(db, late.arn)
    assert late_row is not None
    assert (late_row["status"], late_row["cursor_after"]) == ("downloaded", None)

    # When the state machine then ends A with a failure
    failed = unlock_run(late.unlock_failed(step="Unlock", error="LockLost"), db=db, respecs=RESPECS)

    # Then A is failed, and B's lock is still untouched
    assert (failed["status"], failed["lock_released"]) == ("failed", False)
    assert source_row_text(db, source_id) == taken


def test_unlock_success_of_a_run_that_did_not_download_is_refused(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a run that validated but never downloaded
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    validate(db, execution)
    before = source_row_text(db, source_id)

    # When it reports success
    with pytest.raises(RunNotDownloaded):
        unlock_run(execution.unlock_succeeded(), db=db, respecs=RESPECS)

    # Then nothing changed
    assert source_row_text(db, source_id) == before
    row = run_row(db, execution.arn)
    assert row is not None
    assert row["status"] == "running"


def test_unlock_failure_of_the_holder_releases_the_lock_once_and_keeps_the_cursor(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given execution A validated and its download failed
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    validate(db, execution)
    request = execution.unlock_failed(
        step="Download", error="SourceUnavailable", cause='{"errorMessage": "503"}'
    )

    # When its unlock-failure request is delivered twice
    first = unlock_run(request, db=db, respecs=RESPECS)
    after_first = source_row_text(db, source_id)
    second = unlock_run(request, db=db, respecs=RESPECS)

    # Then the first released the lock, the second released nothing and changed nothing
    assert (first["status"], first["lock_released"]) == ("failed", True)
    assert second == {**first, "lock_released": False}
    assert source_row_text(db, source_id) == after_first
    source = get_source(db, source_id)
    assert source is not None
    assert (source["locked_by"], source["last_modified_date"]) == (None, CURSOR)
    row = run_row(db, execution.arn)
    assert row is not None
    assert (row["status"], row["failed_step"], row["error"], row["error_detail"]) == (
        "failed",
        "Download",
        "SourceUnavailable",
        '{"errorMessage": "503"}',
    )


def test_unlock_failure_without_a_ledger_row_records_the_failure(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given an execution that validation never recorded (it timed out before)
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    before = source_row_text(db, source_id)

    # When it ends with a failure that has no cause
    result = unlock_run(
        execution.unlock_failed(step="Validate", error="States.Timeout"), db=db, respecs=RESPECS
    )

    # Then a failed row holds the failure's error and step
    assert result == {
        "source_id": source_id,
        "execution_arn": execution.arn,
        "status": "failed",
        "lock_released": False,
        "cursor_before": None,
        "cursor_after": None,
        "flow_type": None,
        "error_detail": None,
    }
    row = run_row(db, execution.arn)
    assert row is not None
    assert (row["status"], row["failed_step"], row["error"], row["error_detail"]) == (
        "failed",
        "Validate",
        "States.Timeout",
        None,
    )
    assert row["execution_name"] == execution.name
    assert row["finished_at"] is not None
    # And the source is untouched
    assert source_row_text(db, source_id) == before


def test_unlock_failure_keeps_the_detail_the_failing_service_recorded(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given validation failed permanently and its handler recorded why
    source_id = make_source(runtime_count=2, params={"type": "Weekly"})
    execution = new_execution(source_id)
    with pytest.raises(InvalidFlowParams) as raised:
        validate(db, execution)
    failure_recorder(db, "Validate")(execution.validation(), "InvalidFlowParams", str(raised.value))

    # When the state machine ends the run with that failure
    unlock_run(
        execution.unlock_failed(step="Validate", error="InvalidFlowParams", cause="truncated"),
        db=db,
        respecs=RESPECS,
    )

    # Then the ledger keeps the service's full detail
    row = run_row(db, execution.arn)
    assert row is not None
    assert (row["status"], row["error"], row["error_detail"]) == (
        "failed",
        "InvalidFlowParams",
        str(raised.value),
    )
