"""Validation checks a source's connection before it locks or counts anything, and only for a
source that is going to run."""

from __future__ import annotations

import pytest

from shared.connectors.base import InvalidConnection, SourceUnreachable
from shared.errors import SourceflowError
from shared.store.db import Database
from shared.store.runs import failure_recorder
from tests.fakes import FakeConnectionCheck
from tests.integration.conftest import (
    CURSOR,
    MakeSource,
    NewExecution,
    run_row,
    source_row_text,
    validate,
)


@pytest.mark.parametrize(
    "error",
    [
        InvalidConnection("source 'x': connection.bucket = 'nope' does not exist"),
        SourceUnreachable("source 'x': cannot connect to PostgreSQL: Connection refused"),
    ],
    ids=["permanent", "transient"],
)
def test_a_failed_check_leaves_the_source_unlocked_and_uncounted(
    db: Database, make_source: MakeSource, new_execution: NewExecution, error: SourceflowError
) -> None:
    # Given a source due to run whose connection check fails
    source_id = make_source(runtime_count=3, cursor=CURSOR)
    execution = new_execution(source_id)
    before = source_row_text(db, source_id)
    check = FakeConnectionCheck(error)

    # When it is validated
    with pytest.raises(type(error)):
        validate(db, execution, check)

    # Then the source was checked once and nothing of it changed: no lock, no count, no run
    assert check.checked == [source_id]
    assert source_row_text(db, source_id) == before
    assert run_row(db, execution.arn) is None


def test_a_recorded_check_failure_is_reported_again_without_a_second_check(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    source_id = make_source(runtime_count=3, cursor=CURSOR)
    execution = new_execution(source_id)
    failing = FakeConnectionCheck(InvalidConnection("source 'x': no such bucket"))
    with pytest.raises(InvalidConnection):
        validate(db, execution, failing)
    # As the task handler does on a permanent error:
    failure_recorder(db, "Validate")(execution.validation(), "InvalidConnection", "no such bucket")

    again = FakeConnectionCheck()
    with pytest.raises(SourceflowError, match="no such bucket"):
        validate(db, execution, again)
    assert again.checked == []


def test_a_source_that_will_be_skipped_is_not_checked(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given one inactive source, and one locked by another execution
    inactive = make_source(runtime_count=2, cursor=CURSOR, is_active=False)
    locked = make_source(runtime_count=2, cursor=CURSOR)
    validate(db, new_execution(locked))
    check = FakeConnectionCheck()

    # When each is validated
    decisions = [validate(db, new_execution(source), check) for source in (inactive, locked)]

    # Then both are skipped without reaching out to the source
    assert [decision["reason"] for decision in decisions] == ["SourceInactive", "SourceLocked"]
    assert check.checked == []


def test_a_duplicate_of_a_decided_run_is_not_checked_again(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    source_id = make_source(runtime_count=2, cursor=CURSOR)
    execution = new_execution(source_id)
    check = FakeConnectionCheck()
    first, second = validate(db, execution, check), validate(db, execution, check)
    assert first == second
    assert check.checked == [source_id]
