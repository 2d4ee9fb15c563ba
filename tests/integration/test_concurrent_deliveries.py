"""Duplicate deliveries handled at the same moment, each in its own database session: the
row locks and conditional updates, not the order of arrival, keep every effect single.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from functools import partial
from typing import Any

import pytest

from services.download.adapters import claim_download
from services.unlocking.service import unlock_run
from shared.errors import DuplicateDelivery, TransientError
from shared.store.db import Database
from shared.store.sources import get_source
from shared.timefmt import isoformat
from tests.builders import Execution, records_modified
from tests.fakes import FakeConnector, FakeSink
from tests.integration.conftest import (
    CURSOR,
    RESPECS,
    MakeSource,
    NewExecution,
    download,
    downloaded_run,
    new_claim,
    race,
    run_row,
    runs_of,
    validate,
)


def race_validations(dsn: str, source_id: str, *executions: Execution) -> list[Any]:
    """Validate each of `executions` at once, each in its own session, all released together
    once every one of them waits for the source's row; returns what each returned or raised."""
    return race(
        dsn,
        "source",
        "source_id",
        source_id,
        [partial(validate, execution=execution) for execution in executions],
    )


def test_concurrent_validations_of_one_source_let_exactly_one_run(
    db: Database, migrated_url: str, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given two executions whose validations reach the source row at the same moment
    source_id = make_source(runtime_count=2, cursor=CURSOR)
    first, second = new_execution(source_id), new_execution(source_id)

    # When both validate
    results = race_validations(migrated_url, source_id, first, second)

    # Then exactly one runs, the other is skipped because the source is locked
    assert sorted(result["decision"] for result in results) == ["run", "skip"], results
    winner = first if results[0]["decision"] == "run" else second
    source = get_source(db, source_id)
    assert source is not None
    assert (source["locked_by"], source["runtime_count"]) == (winner.arn, 3)


def _validate_one_execution_twice_at_once(
    db: Database, migrated_url: str, make_source: MakeSource, new_execution: NewExecution
) -> tuple[str, Execution, list[Any]]:
    source_id = make_source(runtime_count=2, cursor=CURSOR)
    execution = new_execution(source_id)
    results = race_validations(migrated_url, source_id, execution, execution)
    return source_id, execution, results


def test_a_concurrent_duplicate_validation_counts_the_run_once(
    db: Database, migrated_url: str, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a validation request delivered twice, both copies handled at the same moment
    source_id, execution, results = _validate_one_execution_twice_at_once(
        db, migrated_url, make_source, new_execution
    )

    # Then at least one delivery decided to run, and the run was counted and recorded once
    assert any(isinstance(result, dict) and result["decision"] == "run" for result in results)
    source = get_source(db, source_id)
    assert source is not None
    assert (source["runtime_count"], source["locked_by"]) == (3, execution.arn)
    assert [run["execution_arn"] for run in runs_of(db, source_id)] == [execution.arn]


def test_a_concurrent_duplicate_validation_returns_the_first_decision(
    db: Database, migrated_url: str, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a validation request delivered twice, both copies handled at the same moment
    _, _, results = _validate_one_execution_twice_at_once(
        db, migrated_url, make_source, new_execution
    )

    # Then both copies return the same decision
    assert results[0] == results[1], results


def test_concurrent_duplicate_downloads_stream_once(
    db: Database, migrated_url: str, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a download request delivered twice (two copies), both handled at the same moment
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    plan = validate(db, execution)["plan"]
    items = records_modified(CURSOR + timedelta(days=1), CURSOR + timedelta(days=2))
    connectors = [FakeConnector(items) for _ in range(2)]
    sinks = [FakeSink(), FakeSink()]
    results: list[Any] = [None, None]
    start = threading.Barrier(2, timeout=5)

    def deliver(index: int) -> None:
        own = Database(migrated_url, application_name=f"it-dl-{index}")
        try:
            start.wait()
            results[index] = download(own, execution, plan, connectors[index], sinks[index])
        except Exception as exc:
            results[index] = exc
        finally:
            own.close()

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    # Then one copy claimed the download and streamed it; the other never streamed: it stood
    # down while the claim was live, or (arriving after) returned the recorded result
    streamed = [i for i in range(2) if connectors[i].yielded]
    assert len(streamed) == 1, results
    other = 1 - streamed[0]
    assert isinstance(results[other], DuplicateDelivery) or results[other] == results[streamed[0]]
    assert sinks[other].writes == 0
    row = run_row(db, execution.arn)
    assert row is not None
    assert (row["status"], row["records"], row["objects"]) == ("downloaded", 2, 1)
    assert results[streamed[0]]["records"] == 2


def test_a_message_handed_out_again_waits_for_its_dead_holder_then_takes_over(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a delivery of message M that claimed the download and then died
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    plan = validate(db, execution)["plan"]
    items = records_modified(CURSOR + timedelta(days=1))
    dead = new_claim("M")
    with db.transaction() as cur:
        assert claim_download(cur, execution.arn, dead) is None

    # When M is handed out again while the dead delivery's claim is still live
    with pytest.raises(TransientError) as waiting:
        download(db, execution, plan, FakeConnector(items), FakeSink(), claim=new_claim("M"))
    assert waiting.value.error_name == "DownloadInProgress"

    # Then once the claim has lapsed, the next delivery of M downloads the run
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source_run SET download_claimed_until = now() - interval '1 second'"
            " WHERE execution_arn = %s",
            (execution.arn,),
        )
    result = download(db, execution, plan, FakeConnector(items), FakeSink(), claim=new_claim("M"))
    assert result["records"] == 1


def test_concurrent_duplicate_unlocks_move_the_cursor_and_release_the_lock_once(
    db: Database,
    migrated_url: str,
    make_source: MakeSource,
    new_execution: NewExecution,
    sink: FakeSink,
) -> None:
    # Given a downloaded run, and its unlock-success request handled twice at the same moment
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    newest = CURSOR + timedelta(days=2)
    downloaded_run(db, execution, records_modified(newest), sink)

    # When both copies unlock
    results = race(
        migrated_url,
        "source_run",
        "execution_arn",
        execution.arn,
        [lambda own: unlock_run(execution.unlock_succeeded(), db=own, respecs=RESPECS)] * 2,
    )

    # Then one released the lock, the other reported the same outcome without releasing
    assert sorted(result["lock_released"] for result in results) == [False, True], results
    assert {result["cursor_after"] for result in results} == {isoformat(newest)}
    # And the ledger shows a single move from the old cursor
    row = run_row(db, execution.arn)
    assert row is not None
    assert (row["status"], row["cursor_before"], row["cursor_after"]) == (
        "succeeded",
        CURSOR,
        newest,
    )
    source = get_source(db, source_id)
    assert source is not None
    assert (source["last_modified_date"], source["locked_by"]) == (newest, None)
