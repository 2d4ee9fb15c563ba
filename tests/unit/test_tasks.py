"""shared.runtime.tasks: one SQS record in, one task outcome out (success, named failure, or
retry)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from shared.errors import ContractViolation, PermanentError, TaskOver, TransientError
from shared.runtime import contracts
from shared.runtime.deliveries import Delivery
from shared.runtime.tasks import TaskCallbacks
from tests.builders import request_body, sqs_record
from tests.fakes import FakeCallbacks, client_error
from tests.unit.task_harness import (
    RETRY,
    Harness,
    raising,
    run_fields,
    token_of,
)

# --- success ------------------------------------------------------------------------------------


def test_work_fields_are_sent_as_a_valid_result_to_the_message_token() -> None:
    # Given a valid validation-request
    harness, record = Harness(), sqs_record()
    # When its work returns the fields of a run decision
    harness.process(record)
    # Then one valid validation-result goes to the message's own token
    [(token, output)] = harness.callbacks.succeeded
    assert token == token_of(record)
    contracts.validate(output, "validation-result")
    assert output["correlation_id"] == json.loads(record.body)["correlation_id"]
    assert output["runtime_count"] == 42
    assert harness.failures.entries == []
    assert harness.callbacks.failed == []
    assert harness.visibility.delays == []


def test_a_field_the_result_schema_forbids_fails_the_task_by_name() -> None:
    # Given work that returns a run decision carrying a skip reason (a producer bug)
    def buggy(message: dict[str, Any], _: Delivery) -> Mapping[str, Any]:
        return {**run_fields(message), "reason": "SourceLocked"}

    harness = Harness()
    # When the record is processed
    harness.process(sqs_record(), buggy)

    # Then no success is reported; the run fails now as InvalidTaskResult, with the detail kept
    assert harness.callbacks.succeeded == []
    [(_, error, cause)] = harness.callbacks.failed
    assert error == "InvalidTaskResult" and "validation-result" in cause
    [(_, recorded_error, _)] = harness.failures.entries
    assert recorded_error == "InvalidTaskResult"


# --- malformed messages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param(json.dumps(request_body(schema="download-request")), id="wrong-schema"),
        pytest.param(
            json.dumps({k: v for k, v in request_body().items() if k != "task_token"}),
            id="no-task-token",
        ),
    ],
)
def test_a_malformed_message_raises_without_any_callback(body: str) -> None:
    harness = Harness()
    with pytest.raises(ContractViolation):
        harness.process(sqs_record(body))
    assert harness.callbacks.calls == 0
    assert harness.failures.entries == []


# --- permanent errors ---------------------------------------------------------------------------


def test_a_permanent_error_is_recorded_and_reported_by_name() -> None:
    # Given work that meets a permanent error named X
    harness, record = Harness(), sqs_record()
    # When the record is processed
    harness.process(record, raising(PermanentError("bad params", error_name="X")))
    # Then the failure is recorded and reported, and the message is consumed
    [(message, name, detail)] = harness.failures.entries
    assert message == json.loads(record.body)
    assert (name, detail) == ("X", "bad params")
    assert harness.callbacks.failed == [(token_of(record), "X", "bad params")]
    assert harness.callbacks.succeeded == []
    assert harness.visibility.delays == []


# --- transient errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("receive_count", [1, 2])
def test_a_transient_error_before_the_last_delivery_is_raised_for_redelivery(
    receive_count: int,
) -> None:
    # Given a delivery that is not the last allowed one
    harness, record = Harness(), sqs_record(receive_count=receive_count)
    # When work meets a transient error, Then it is raised for redelivery
    with pytest.raises(TransientError):
        harness.process(record, raising(TransientError("vendor timed out")))
    # And nothing is reported (the backoff is shared.runtime.deliveries.guarded's job)
    assert harness.visibility.delays == []
    assert harness.callbacks.calls == 0
    assert harness.failures.entries == []


def test_last_delivery_reports_the_transient_error_by_name() -> None:
    # Given the last delivery the queue allows
    harness = Harness()
    record = sqs_record(receive_count=RETRY.max_receives)
    error = TransientError("vendor timed out", error_name="SourceUnreachable")
    # When work still meets a transient error
    harness.process(record, raising(error))
    # Then the run fails now, by the error's name, saying how often it tried
    [(_, name, detail)] = harness.failures.entries
    assert name == "SourceUnreachable"
    assert "vendor timed out" in detail
    assert f"gave up after {RETRY.max_receives} deliveries" in detail
    assert harness.callbacks.failed == [(token_of(record), "SourceUnreachable", detail)]
    assert harness.visibility.delays == []


# --- the task is over ---------------------------------------------------------------------------


def test_a_task_that_already_timed_out_consumes_the_message() -> None:
    # Given a task that Step Functions has already timed out
    harness = Harness(callbacks=FakeCallbacks(over=TaskOver("TaskTimedOut")))
    # When the work succeeds, Then reporting it does not raise (no redelivery)
    harness.process(sqs_record())
    assert harness.failures.entries == []
    assert harness.visibility.delays == []


# --- retry policy -------------------------------------------------------------------------------


# --- TaskCallbacks against Step Functions -------------------------------------------------------


class FakeStepFunctions:
    """Answers every call with `error_code`, or records it when there is none."""

    def __init__(self, error_code: str | None = None) -> None:
        self.error_code = error_code
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _answer(self, operation: str, kwargs: dict[str, Any]) -> None:
        if self.error_code is not None:
            raise client_error(self.error_code, operation)
        self.calls.append((operation, kwargs))

    def send_task_success(self, **kwargs: Any) -> None:
        self._answer("SendTaskSuccess", kwargs)

    def send_task_failure(self, **kwargs: Any) -> None:
        self._answer("SendTaskFailure", kwargs)

    def send_task_heartbeat(self, **kwargs: Any) -> None:
        self._answer("SendTaskHeartbeat", kwargs)


def every_callback(callbacks: TaskCallbacks) -> list[Callable[[], None]]:
    return [
        lambda: callbacks.succeed("tok", {"a": 1}),
        lambda: callbacks.fail("tok", "X", "detail"),
        lambda: callbacks.heartbeat("tok"),
    ]


@pytest.mark.parametrize("code", ["InvalidToken", "TaskTimedOut", "TaskDoesNotExist"])
def test_an_ended_task_answers_task_over(code: str) -> None:
    callbacks = TaskCallbacks(FakeStepFunctions(code))
    for call in every_callback(callbacks):
        with pytest.raises(TaskOver, match=code):
            call()


def test_throttling_is_transient() -> None:
    callbacks = TaskCallbacks(FakeStepFunctions("ThrottlingException"))
    for call in every_callback(callbacks):
        with pytest.raises(TransientError, match="ThrottlingException"):
            call()


@pytest.mark.parametrize("code", ["InvalidOutput", "ValidationException"])
def test_a_report_step_functions_rejects_is_permanent(code: str) -> None:
    callbacks = TaskCallbacks(FakeStepFunctions(code))
    for call in every_callback(callbacks):
        with pytest.raises(PermanentError, match=code) as caught:
            call()
        assert caught.value.error_name == "TaskReportRejected"


def test_success_output_is_sent_as_json() -> None:
    sfn = FakeStepFunctions()
    TaskCallbacks(sfn).succeed("tok", {"decision": "run"})
    assert sfn.calls == [("SendTaskSuccess", {"taskToken": "tok", "output": '{"decision": "run"}'})]


def test_failure_name_and_cause_are_truncated_to_step_functions_limits() -> None:
    sfn = FakeStepFunctions()
    TaskCallbacks(sfn).fail("tok", "E" * 300, "c" * 40000)
    [(operation, sent)] = sfn.calls
    assert operation == "SendTaskFailure"
    assert sent["error"] == "E" * 256
    assert sent["cause"] == "c" * 32768


def test_a_heartbeat_carries_only_the_token() -> None:
    sfn = FakeStepFunctions()
    TaskCallbacks(sfn).heartbeat("tok")
    assert sfn.calls == [("SendTaskHeartbeat", {"taskToken": "tok"})]
