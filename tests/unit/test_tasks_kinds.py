"""Task work that a person answers later (the Approve step), and the switch that turns the
approval gate off (shared.runtime.settings.env_bool)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from shared.runtime.deliveries import Delivery
from shared.runtime.settings import SettingsError, env_bool
from tests.builders import sqs_record
from tests.fakes import FakeCallbacks
from tests.unit.task_harness import RETRY, Harness

VARIABLE = "SOURCEFLOW_TEST_SWITCH"


# --- work that keeps the token for a person ----------------------------------------------------


def test_work_that_returns_none_reports_nothing_and_records_no_failure() -> None:
    # Given work that keeps the task token for a person to answer later
    harness, record = Harness(), sqs_record()
    seen: list[Mapping[str, Any]] = []

    def keep_the_token(message: dict[str, Any], _: Delivery) -> Mapping[str, Any] | None:
        seen.append(message)
        return None

    # When the record is processed
    harness.process(record, keep_the_token)

    # Then the work ran once, and nothing was reported: no success, failure or heartbeat
    assert len(seen) == 1
    assert harness.callbacks.succeeded == []
    assert harness.callbacks.failed == []
    assert harness.callbacks.heartbeats == []
    # And no failure was recorded and the message was not delayed (it is consumed)
    assert harness.failures.entries == []
    assert harness.visibility.delays == []


def test_work_that_returns_none_is_not_reported_even_on_the_last_delivery() -> None:
    # Given the last delivery the queue allows, and work that keeps the token
    callbacks = FakeCallbacks()
    harness = Harness(callbacks=callbacks)
    record = sqs_record(receive_count=RETRY.max_receives)

    # When the record is processed
    harness.process(record, lambda message, delivery: None)

    # Then still nothing is reported or recorded: the person's answer ends the task
    assert callbacks.calls == 0
    assert harness.failures.entries == []


# --- env_bool ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("false", False),
        ("TRUE", True),
        ("False", False),
        (" true ", True),
        ("\tfalse\n", False),
    ],
)
@pytest.mark.parametrize("default", [True, False])
def test_env_bool_reads_true_and_false_whatever_the_default(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool, default: bool
) -> None:
    # Given the variable spelled true or false (any case, surrounding spaces)
    monkeypatch.setenv(VARIABLE, raw)
    # When it is read, Then the spelled value wins over the default
    assert env_bool(VARIABLE, default) is expected


@pytest.mark.parametrize("default", [True, False])
def test_env_bool_unset_or_empty_is_the_default(
    monkeypatch: pytest.MonkeyPatch, default: bool
) -> None:
    # Given the variable unset
    monkeypatch.delenv(VARIABLE, raising=False)
    # Then the default is used
    assert env_bool(VARIABLE, default) is default
    # Given the variable set but empty, Then the default is used as well
    monkeypatch.setenv(VARIABLE, "")
    assert env_bool(VARIABLE, default) is default


@pytest.mark.parametrize("raw", ["yes", "no", "1", "0", "on", "ture", "true false", " "])
def test_env_bool_refuses_anything_else_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    # Given the variable set to something that is neither true nor false
    monkeypatch.setenv(VARIABLE, raw)
    # When it is read, Then the error names the variable, its value and what is expected
    with pytest.raises(SettingsError) as caught:
        env_bool(VARIABLE, True)
    message = str(caught.value)
    assert VARIABLE in message
    assert repr(raw) in message
    assert "true or false" in message
