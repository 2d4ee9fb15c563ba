"""A download across invocations against a real PostgreSQL (issue 17, deliver 1): each part is
committed with where the source resumes after it, an invocation out of time stops at its next
part and answers "more", and the next invocation — a continuation or a redelivery after a
crash — goes on after the last committed part, landing every record exactly once, with one
manifest naming every part of the run."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from services.download.adapters import claim_download
from services.download.domain import Budget, Claim, Heartbeat
from services.download.service import download_run
from services.unlocking.service import unlock_run
from shared.connectors.base import SourceUnreachable
from shared.errors import DuplicateDelivery, TransientError
from shared.store.db import Database
from tests.builders import Execution, records_modified
from tests.fakes import FakeClock, FakeConnector, FakeSink, quiet_heartbeat
from tests.integration.conftest import (
    CURSOR,
    RESPECS,
    MakeSource,
    NewExecution,
    download,
    run_row,
    validate,
)

MINUTE = timedelta(minutes=1)


def checkpoints_of(db: Database, execution_arn: str) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute(
            "SELECT * FROM public.download_checkpoint WHERE execution_arn = %s ORDER BY sequence",
            (execution_arn,),
        )
        return [dict(row) for row in cur.fetchall()]


def landed_of(db: Database, execution_arn: str) -> int:
    with db.transaction() as cur:
        cur.execute(
            "SELECT count(*) AS n FROM public.landed_version WHERE execution_arn = %s",
            (execution_arn,),
        )
        return int(cur.fetchone()["n"])


def invocation(
    db: Database,
    execution: Execution,
    plan: dict[str, Any],
    connector: FakeConnector,
    sink: FakeSink,
    *,
    records_per_invocation: int,
    continuation: int,
    heartbeat: Heartbeat | None = None,
) -> dict[str, Any]:
    """One Download task's delivery, whose budget is spent once it has read
    `records_per_invocation` records (its clock moves a second a record)."""
    clock = FakeClock(0.0)
    connector.on_record = lambda yielded: clock.advance(1)
    request = {**execution.download(plan), "continuation": continuation}
    claim = Claim(uuid.uuid4().hex, f"message-{continuation}", MINUTE, continuation)
    return download_run(
        request,
        db=db,
        connector_for=connector.factory(),
        sink=sink,
        heartbeat=heartbeat or quiet_heartbeat(),
        part_max_records=2,
        claim=claim,
        budget=Budget(deadline=records_per_invocation - 0.5, monotonic=clock),
    )


def a_validated_run(
    db: Database, make_source: MakeSource, new_execution: NewExecution, records: int
) -> tuple[Execution, dict[str, Any], list[dict[str, Any]]]:
    """A validated Normal run, and the `records` its source serves (a minute apart)."""
    execution = new_execution(make_source(cursor=CURSOR))
    plan = validate(db, execution)["plan"]
    return execution, plan, records_modified(*(CURSOR + m * MINUTE for m in range(1, records + 1)))


def test_a_download_out_of_time_is_continued_until_the_window_is_done(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a Normal run of eleven records, from a source that resumes after every third
    execution, plan, records = a_validated_run(db, make_source, new_execution, 11)
    connector = FakeConnector(records, page=3)

    # When each Download task's invocation runs out of time after reading four records
    results: list[dict[str, Any]] = []
    while not results or results[-1].get("more"):
        results.append(
            invocation(
                db,
                execution,
                plan,
                connector,
                sink,
                records_per_invocation=4,
                continuation=len(results),
            )
        )

    # Then each invocation stopped at the end of a page, answering more with the run so far,
    # and the next one went on from there
    assert [r.get("more", False) for r in results] == [True, True, False]
    assert [r["records"] for r in results] == [6, 11, 11]
    # (the second stopped after the last record, so the third found the window done)
    assert connector.resumed_from == [None, {"served": 6}, {"served": 11}]
    # And the manifest names every part of the run, in order, holding each record once
    manifest = sink.manifests[results[-1]["manifest_key"]]
    keys = [entry["key"] for entry in manifest["objects"]]
    assert keys == [
        f"{execution.source_id}/{execution.name}/part-{n:05d}.jsonl.gz" for n in range(4)
    ]
    landed = [record["id"] for key in keys for record in sink.parts[key]]
    assert landed == [record["id"] for record in records]
    assert manifest["records"] == 11 == results[-1]["records"]
    # And the ledger counts the run's invocations; each part was committed as it was written
    run = run_row(db, execution.arn)
    assert run is not None
    assert (run["status"], run["records"], run["objects"]) == ("downloaded", 11, 4)
    assert (run["download_invocations"], run["download_continuation"]) == (3, 2)
    assert [c["object_key"] for c in checkpoints_of(db, execution.arn)] == keys


def test_a_redelivery_after_a_crash_goes_on_after_the_last_committed_part(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a download whose source drops the connection at its seventh record
    execution, plan, records = a_validated_run(db, make_source, new_execution, 9)
    connector = FakeConnector(records, page=2)

    def drop_the_connection(yielded: int) -> None:
        if yielded == 7:
            raise SourceUnreachable("source 'x': connection reset")

    connector.on_record = drop_the_connection
    with pytest.raises(SourceUnreachable):
        download(db, execution, plan, connector, sink, part_max_records=2)
    assert [c["sequence"] for c in checkpoints_of(db, execution.arn)] == [1, 2, 3]

    # When the message is delivered again
    connector.on_record = None
    result = download(db, execution, plan, connector, sink, part_max_records=2)

    # Then it read on after the third part, and the run holds every record once
    assert connector.resumed_from[-1] == {"served": 6}
    manifest = sink.manifests[result["manifest_key"]]
    landed = [r["id"] for entry in manifest["objects"] for r in sink.parts[entry["key"]]]
    assert landed == [record["id"] for record in records]
    assert (result["records"], result["objects"]) == (9, 5)


def test_a_version_served_again_after_a_continuation_is_skipped_as_the_same_run_landed_it(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a source that serves its first record again at the end
    execution, plan, records = a_validated_run(db, make_source, new_execution, 4)
    connector = FakeConnector([*records, records[0]], page=1)

    # When the download is continued after its second record
    first = invocation(
        db, execution, plan, connector, sink, records_per_invocation=2, continuation=0
    )
    assert first["more"] and landed_of(db, execution.arn) == 2
    last = invocation(
        db, execution, plan, connector, sink, records_per_invocation=99, continuation=1
    )

    # Then the repeat is skipped, counted, and every version listed once for later windows
    assert (last["records"], last["duplicates_skipped"]) == (4, 1)
    assert landed_of(db, execution.arn) == 4


def test_a_delivery_of_an_earlier_task_never_stands_a_later_one_down(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a run whose claim a delivery of its second Download task holds
    execution = new_execution(make_source(cursor=CURSOR))
    plan = validate(db, execution)["plan"]
    request = execution.download(plan)
    holder = Claim("a-1", "message-1", MINUTE, continuation=1)
    with db.transaction() as cur:
        assert claim_download(cur, execution.arn, holder) is None

    def deliver(continuation: int) -> None:
        download_run(
            {**request, "continuation": continuation},
            db=db,
            connector_for=FakeConnector([]).factory(),
            sink=sink,
            heartbeat=quiet_heartbeat(),
            part_max_records=2,
            claim=Claim(uuid.uuid4().hex, f"message-{continuation}-x", MINUTE, continuation),
        )

    # Then a copy of an earlier task's message stands down, and the next task's waits its turn
    with pytest.raises(DuplicateDelivery):
        deliver(0)
    with pytest.raises(DuplicateDelivery):
        deliver(1)
    with pytest.raises(TransientError, match="earlier Download task") as caught:
        deliver(2)
    assert caught.value.error_name == "DownloadInProgress"


def test_the_downloads_warnings_go_out_with_the_run_that_succeeded(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    execution, plan, records = a_validated_run(db, make_source, new_execution, 1)
    warning = "source 'x': connection.key_column 'k' of public.t has no index"
    download(db, execution, plan, FakeConnector(records, warnings=[warning]), sink)
    unlocked = unlock_run(execution.unlock_succeeded(), db=db, respecs=RESPECS)
    assert unlocked["warnings"] == [warning]
