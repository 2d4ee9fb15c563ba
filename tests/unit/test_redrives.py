"""`sourceflow redrive`: the choice between Step Functions' RedriveExecution and a new run over
the failed window, against a real boto3 client whose answers are stubbed as AWS gives them
(botocore's Stubber checks every request and answer against the service's model), and the
local emulator's answer to an action it lacks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from ops.config import OperatorError
from ops.redrives import redrive_choice, redrive_execution_or_new_run
from shared.rules.redrives import RedriveHow

ARN = "arn:aws:states:eu-west-1:123456789012:execution:sourceflow-dev-run:src-20261128T120000Z-ab"
EXECUTION = {"executionArn": ARN}


def failed_run(status: str) -> dict[str, Any]:
    return {"execution_name": ARN.rsplit(":", 1)[1], "execution_arn": ARN, "status": status}


@pytest.fixture
def sfn() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "stepfunctions",
        region_name="eu-west-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def described(status: str) -> dict[str, Any]:
    return {
        "executionArn": ARN,
        "stateMachineArn": ARN.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0],
        "status": status,
        "startDate": datetime(2026, 11, 28, 12, tzinfo=UTC),
    }


def redrive_refused(stubber: Stubber, ended: str, code: str, message: str) -> None:
    """The execution ended as `ended`; RedriveExecution answers an error (HTTP 500 for the
    bare status code the local emulator's page gives, 400 for AWS's named errors)."""
    stubber.add_response("describe_execution", described(ended), EXECUTION)
    stubber.add_client_error(
        "redrive_execution",
        service_error_code=code,
        service_message=message,
        http_status_code=int(code) if code.isdigit() else 400,
        expected_params=EXECUTION,
    )


def test_a_run_failed_through_its_failure_path_gets_a_new_run_without_asking_step_functions(
    sfn: tuple[Any, Stubber],
) -> None:
    client, _ = sfn  # no answer stubbed: any call would fail the test

    assert redrive_execution_or_new_run(client, failed_run("failed")) is RedriveHow.NEW_RUN


@pytest.mark.parametrize("ended", ["FAILED", "TIMED_OUT", "ABORTED"])
def test_an_execution_cut_off_in_a_step_is_redriven_by_step_functions(
    sfn: tuple[Any, Stubber], ended: str
) -> None:
    client, stubber = sfn
    stubber.add_response("describe_execution", described(ended), EXECUTION)
    stubber.add_response(
        "redrive_execution", {"redriveDate": datetime(2026, 11, 28, 13, tzinfo=UTC)}, EXECUTION
    )

    assert redrive_execution_or_new_run(client, failed_run("running")) is (
        RedriveHow.REDRIVE_EXECUTION
    )


def test_an_engine_without_redrive_execution_gets_a_new_run(sfn: tuple[Any, Stubber]) -> None:
    # The moto server answers RedriveExecution with an HTML page and HTTP 500
    client, stubber = sfn
    redrive_refused(stubber, "TIMED_OUT", "500", "<!doctype html><title>500 Internal Server")

    assert redrive_execution_or_new_run(client, failed_run("running")) is RedriveHow.NEW_RUN


def test_step_functions_refusing_the_redrive_is_said_not_worked_around(
    sfn: tuple[Any, Stubber],
) -> None:
    client, stubber = sfn
    redrive_refused(
        stubber, "FAILED", "ExecutionNotRedrivable", "Execution redrivable period exceeded"
    )

    with pytest.raises(OperatorError, match=r"refused to redrive .*redrivable period exceeded"):
        redrive_execution_or_new_run(client, failed_run("running"))


def test_a_running_execution_is_refused_without_a_redrive(sfn: tuple[Any, Stubber]) -> None:
    client, stubber = sfn
    stubber.add_response("describe_execution", described("RUNNING"), EXECUTION)

    with pytest.raises(OperatorError, match="is still RUNNING; only a failed run is redriven"):
        redrive_execution_or_new_run(client, failed_run("running"))


@pytest.mark.parametrize("status", ["succeeded", "cancelled", "skipped"])
def test_a_run_that_did_not_fail_is_refused(status: str) -> None:
    with pytest.raises(OperatorError, match=f"did not fail \\(its status: {status}\\)"):
        redrive_choice("src-run", status, None)
