"""A step that committed is never reported as failed (issue 14): a redelivered validation or
unlock, or the state machine's failure path after a task that timed out, finds the work already
committed and reports the committed outcome, changing nothing.

(A redelivered validation returning the first decision is in test_exactly_once.py.)
"""

from __future__ import annotations

from datetime import timedelta

from services.unlocking.metrics import RunEnded
from services.unlocking.service import unlock_run
from shared.store.db import Database
from shared.timefmt import isoformat
from tests.builders import records_modified
from tests.fakes import FakeSink
from tests.integration.conftest import (
    CURSOR,
    RESPECS,
    MakeSource,
    NewExecution,
    downloaded_run,
    run_row,
    source_row_text,
)


def test_the_failure_path_after_a_committed_unlock_reports_the_success_and_changes_nothing(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a run whose unlock committed its success (cursor moved, lock released, ledger
    # succeeded) but whose report never reached the state machine
    source_id = make_source(runtime_count=1, cursor=CURSOR)
    execution = new_execution(source_id)
    newest = CURSOR + timedelta(days=2)
    downloaded_run(db, execution, records_modified(CURSOR + timedelta(days=1), newest), sink)
    ended: list[RunEnded] = []
    committed = unlock_run(
        execution.unlock_succeeded(), db=db, respecs=RESPECS, on_run_ended=ended.append
    )
    source_after, run_after = source_row_text(db, source_id), run_row(db, execution.arn)

    # When the Unlock task timed out and the failure path asks unlocking to end the run failed
    answer = unlock_run(
        execution.unlock_failed(step="Unlock", error="States.Timeout"),
        db=db,
        respecs=RESPECS,
        on_run_ended=ended.append,
    )

    # Then unlocking answers with the ledger's outcome: succeeded, where the cursor went, what
    # the run counted; it released nothing, since the success had
    assert answer == {**committed, "lock_released": False}
    assert (answer["status"], answer["cursor_after"]) == ("succeeded", isoformat(newest))
    assert answer["error_detail"] is None
    # And the run stays succeeded, the source as the success left it, its end reported once
    assert run_row(db, execution.arn) == run_after
    assert source_row_text(db, source_id) == source_after
    assert [run.status for run in ended] == ["succeeded"]
