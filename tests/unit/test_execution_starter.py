"""Starting runs through the state machine's live alias, as the cloud's scheduler does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from infra.resources import LIVE_ALIAS, Names
from services.scheduler.adapters import ExecutionStarter
from shared.runtime.executions import execution_arn

NAMES = Names("prod")
ALIAS_ARN = NAMES.state_machine_alias_arn("eu-west-1", "123456789012")
EXECUTIONS = f"arn:aws:states:eu-west-1:123456789012:execution:{NAMES.state_machine}"


class StartedAlready:
    """Step Functions answering a start whose name a run already took."""

    def __init__(self) -> None:
        self.started_on: list[str] = []

    def start_execution(self, stateMachineArn: str, **_: Any) -> Any:
        self.started_on.append(stateMachineArn)
        error = {"Error": {"Code": "ExecutionAlreadyExists", "Message": "taken"}}
        raise ClientError(error, "StartExecution")  # type: ignore[arg-type]


def test_the_live_alias_is_the_state_machine_qualified_by_it() -> None:
    assert (
        f"arn:aws:states:eu-west-1:123456789012:stateMachine:{NAMES.state_machine}:{LIVE_ALIAS}"
    ) == ALIAS_ARN


def test_a_run_started_already_through_the_alias_is_named_by_its_execution_arn() -> None:
    # Given a scheduler that starts runs through the live alias, and a run started already
    sfn = StartedAlready()
    started = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    # When it starts that run again
    arn = ExecutionStarter(sfn, ALIAS_ARN)("src-1", started, "abc")

    # Then it asked through the alias and answers the execution's ARN, which names the state
    # machine alone (the old code answered …:execution:sourceflow-prod-run:live:…)
    assert sfn.started_on == [ALIAS_ARN]
    assert arn == f"{EXECUTIONS}:src-1-20261128T120000Z-abc"


@pytest.mark.parametrize("qualifier", ["", ":live", ":7"])
def test_an_execution_is_named_after_the_state_machine_whichever_arn_started_it(
    qualifier: str,
) -> None:
    machine = f"arn:aws:states:eu-west-1:123456789012:stateMachine:{NAMES.state_machine}"
    assert execution_arn(machine + qualifier, "run-1") == f"{EXECUTIONS}:run-1"


def test_an_arn_that_names_no_state_machine_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'arn:aws:sqs:x' is not a state machine's ARN"):
        execution_arn("arn:aws:sqs:x", "run-1")
