"""`sourceflow redrive` against a real PostgreSQL, Step Functions answered by botocore's Stubber:
the redrive recorded before its new run starts, as the person who asked; validation runs the new
run over the failed run's window; a second redrive refused, a start that failed resumed, a run
that failed before it had a window refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from ops.config import OperatorError
from ops.redrives import redrive_run
from shared.store import runs
from shared.store.db import Database
from tests.builders import Execution
from tests.integration.conftest import MakeSource, NewExecution, run_row, validate

STATE_MACHINE = "arn:aws:states:eu-west-1:123456789012:stateMachine:sourceflow-run"
WINDOW = ("window_field", "window_start", "window_end", "window_start_inclusive", "flow_type")
ALICE, BOB = "it_alice", "it_bob"


@pytest.fixture
def sfn() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "stepfunctions", region_name="eu-west-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def started(stubber: Stubber) -> None:
    """StartExecution answered as AWS does, for any name the redrive gives."""
    stubber.add_response(
        "start_execution",
        {"executionArn": f"{STATE_MACHINE}:x", "startDate": datetime.now(UTC)},
        {"stateMachineArn": STATE_MACHINE, "name": ANY, "input": ANY},
    )


@pytest.fixture
def failed(db: Database, make_source: MakeSource, new_execution: NewExecution) -> Execution:
    """A run validated (its window frozen) that then failed in Download, and was unlocked."""
    source_id = make_source(runtime_count=3, cursor=datetime.now(UTC) - timedelta(days=2))
    execution = new_execution(source_id)
    validate(db, execution)
    with db.transaction() as cur:
        runs.fail_run(
            cur, execution.arn, failed_step="Download", error="SourceUnavailable", cause="503"
        )
        runs.release_lock(cur, source_id, execution.arn)
    return execution


def test_a_redrive_is_recorded_as_its_person_and_its_new_run_loads_the_failed_window(
    db: Database, people: dict[str, Database], failed: Execution, sfn: tuple[Any, Stubber]
) -> None:
    # Given a failed run
    client, stubber = sfn
    started(stubber)

    # When alice redrives it
    done = redrive_run(people[ALICE], client, STATE_MACHINE, failed.name)

    # Then a new run was started, recorded as alice's redrive of the failed run
    assert (done["failed_run"], done["how"], done["redriven_by"]) == (failed.name, "new_run", ALICE)
    # And validation runs the new run over the failed run's window and flow
    redrive = Execution(failed.source_id, done["redrive_run"])
    assert validate(db, redrive)["decision"] == "run"
    failed_row, new_row = run_row(db, failed.arn), run_row(db, redrive.arn)
    assert failed_row is not None and new_row is not None
    assert {field: new_row[field] for field in WINDOW} == {
        field: failed_row[field] for field in WINDOW
    }
    # And a second redrive, by anyone, is refused naming the first
    with pytest.raises(OperatorError, match=f"redriven already by {ALICE}, as {redrive.name}"):
        redrive_run(people[BOB], client, STATE_MACHINE, failed.name)


def test_a_redrive_whose_start_failed_starts_its_recorded_run_when_asked_again(
    people: dict[str, Database], failed: Execution, sfn: tuple[Any, Stubber]
) -> None:
    # Given a redrive recorded whose execution did not start (Step Functions refused it)
    client, stubber = sfn
    stubber.add_client_error("start_execution", "ExecutionLimitExceeded", "too many")
    with pytest.raises(OperatorError, match=r"is recorded as .*run `sourceflow redrive .*` again"):
        redrive_run(people[ALICE], client, STATE_MACHINE, failed.name)

    # When it is asked again: Step Functions does not know the recorded execution
    stubber.add_client_error("describe_execution", "ExecutionDoesNotExist", "no such execution")
    started(stubber)
    done = redrive_run(people[BOB], client, STATE_MACHINE, failed.name)

    # Then the recorded run is started, still alice's redrive
    assert (done["failed_run"], done["redriven_by"]) == (failed.name, ALICE)


def test_a_run_that_failed_in_validate_has_no_window_to_load_again(
    db: Database, people: dict[str, Database], make_source: MakeSource, sfn: tuple[Any, Stubber]
) -> None:
    # Given a run that failed before validation froze its window (nothing asked of Step Functions)
    execution = Execution(make_source(), "it-failed-in-validate")
    with db.transaction() as cur:
        run = {
            "execution_arn": execution.arn,
            "execution_name": execution.name,
            "source_id": execution.source_id,
        }
        runs.note_failure(cur, run, step="Validate", error_name="InvalidFlowParams", detail="x")
        runs.fail_run(
            cur, execution.arn, failed_step="Validate", error="InvalidFlowParams", cause=""
        )

    with pytest.raises(OperatorError, match="failed in Validate, before it had a window"):
        redrive_run(people[ALICE], sfn[0], STATE_MACHINE, execution.name)
