"""Offline checks of the one ASL file: the emulator accepts definitions AWS would refuse, and
differs from AWS in ways the definition must be written around (LOCAL_EMULATOR.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from infra import statemachine
from infra.resources import Names, state_machine_substitutions
from services.unlocking import adapters as unlocking
from shared.rules.versions import VERSION_COUNTS
from shared.runtime import contracts
from shared.runtime.catalogue import CLOUD_TIMEOUTS, EVENT_SOURCE, DetailType, Step

CALLBACK = "arn:aws:states:::sqs:sendMessage.waitForTaskToken"


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    queues = {s: f"https://sqs.example/{s}" for s in ("validation", "download", "unlocking")}
    alerts = "arn:aws:sns:eu-west-1:123456789012:alerts"
    return statemachine.render(
        state_machine_substitutions(queues, Names("test").event_bus, alerts, CLOUD_TIMEOUTS)
    )


def _targets(state: dict[str, Any]) -> list[str]:
    targets = [state[key] for key in ("Next", "Default") if key in state]
    targets += [choice["Next"] for choice in state.get("Choices", [])]
    targets += [catch["Next"] for catch in state.get("Catch", [])]
    return targets


def test_every_transition_points_at_a_state(definition: dict[str, Any]) -> None:
    states = definition["States"]
    assert definition["StartAt"] in states
    for name, state in states.items():
        for target in _targets(state):
            assert target in states, f"{name} -> {target}"


def test_every_state_is_reachable(definition: dict[str, Any]) -> None:
    states, seen, todo = definition["States"], set(), [definition["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_targets(states[name]))
    assert seen == set(states)


def test_callback_tasks_have_timeouts_catches_and_no_retry(definition: dict[str, Any]) -> None:
    callbacks = {n: s for n, s in definition["States"].items() if s.get("Resource") == CALLBACK}
    assert set(callbacks) == {
        "Validate",
        "Approve",
        "Download",
        "UnlockAfterSuccess",
        "UnlockAfterFailure",
    }
    for name, state in callbacks.items():
        # moto re-sends the same token on Retry; SQS redelivery retries instead.
        assert "Retry" not in state, name
        assert isinstance(state["TimeoutSeconds"], int) and state["TimeoutSeconds"] > 0, name
        assert any("States.ALL" in c["ErrorEquals"] for c in state["Catch"]), name
        body = state["Parameters"]["MessageBody"]
        assert body["task_token.$"] == "$$.Task.Token"
        assert body["schema"].endswith("-request") and body["version"] == 1
    assert callbacks["Download"]["HeartbeatSeconds"] < callbacks["Download"]["TimeoutSeconds"]


def test_every_failure_after_validation_ends_in_unlock(definition: dict[str, Any]) -> None:
    states = definition["States"]
    for name in ("Validate", "Download", "UnlockAfterSuccess"):
        (catch,) = states[name]["Catch"]
        assert states[catch["Next"]]["Next"] == "UnlockAfterFailure", name
    # Approve names its timeout ApprovalTimedOut, then fails like the others.
    timed_out, other = states["Approve"]["Catch"]
    assert timed_out["ErrorEquals"] == ["States.Timeout"]
    assert states[timed_out["Next"]]["Result"]["Error"] == "ApprovalTimedOut"
    assert states[timed_out["Next"]]["Next"] == other["Next"] == "ApproveFailed"
    assert states["ApproveFailed"]["Next"] == "UnlockAfterFailure"
    # The ledger first (test_a_run_the_ledger_says_succeeded_ends_succeeded_after_all)
    assert states["UnlockAfterFailure"]["Next"] == "SucceededOrFailed"
    assert states["SucceededOrFailed"]["Default"] == "CancelledOrFailed"
    fallback = states[states["UnlockAfterFailure"]["Catch"][0]["Next"]]
    assert fallback["Next"] == "CancelledOrFailed"
    # A cancel ends as cancelled (its own event, no alert); anything else alerts and fails.
    branch = states["CancelledOrFailed"]
    assert [c["Next"] for c in branch["Choices"]] == ["PublishRunCancelled"]
    assert states[states["PublishRunCancelled"]["Next"]]["Type"] == "Fail"
    assert branch["Default"] == "PublishRunFailed"
    # A rejected query fails without paging anyone; every other failure alerts.
    alert_or_not = states[states["PublishRunFailed"]["Next"]]
    assert [(c["StringEquals"], c["Next"]) for c in alert_or_not["Choices"]] == [
        ("ApprovalRejected", "RunFailed")
    ]
    assert alert_or_not["Default"] == "AlertPeople"
    naming = states[states["AlertPeople"]["Next"]]
    ends = [choice["Next"] for choice in naming["Choices"]] + [naming["Default"]]
    assert {states[end]["Type"] for end in ends} == {"Fail"}


def _read(data: dict[str, Any], path: str) -> Any:
    """A `$.a.b` path of the state's data; KeyError when it is not there."""
    value: Any = data
    for key in path.removeprefix("$.").split("."):
        value = value[key]
    return value


def _choose(state: dict[str, Any], data: dict[str, Any]) -> str:
    """The state a Choice of And / IsPresent / StringEquals rules goes to, as AWS decides it:
    a rule's variable that is missing fails the execution, unless IsPresent asked first."""

    def holds(rule: dict[str, Any]) -> bool:
        if "And" in rule:
            return all(holds(each) for each in rule["And"])  # stops at the first false
        if "IsPresent" in rule:
            try:
                _read(data, rule["Variable"])
            except KeyError:
                return not rule["IsPresent"]
            return bool(rule["IsPresent"])
        value = _read(data, rule["Variable"])
        if "NumericGreaterThanEquals" in rule:
            return bool(value >= rule["NumericGreaterThanEquals"])
        if "BooleanEquals" in rule:
            return bool(value is rule["BooleanEquals"])
        return bool(value == rule["StringEquals"])

    return next((c["Next"] for c in state["Choices"] if holds(c)), state["Default"])


def test_a_download_with_more_to_do_is_continued_in_a_new_task_a_bounded_number_of_times(
    definition: dict[str, Any],
) -> None:
    states = definition["States"]
    # Every way into Download starts the count at 0, which each Download message carries
    assert states["RunOrSkip"]["Default"] == states["Approve"]["Next"] == "StartDownload"
    start = states["StartDownload"]
    assert (start["Result"], start["ResultPath"], start["Next"]) == (
        {"count": 0},
        "$.continuation",
        "Download",
    )
    body = states["Download"]["Parameters"]["MessageBody"]
    assert body["continuation.$"] == "$.continuation.count"
    assert states["Download"]["Next"] == "MoreToDownload"
    more = states["MoreToDownload"]
    limit = CLOUD_TIMEOUTS.max_download_continuations

    def after(download: dict[str, Any], count: int) -> str:
        return _choose(more, {"download": download, "continuation": {"count": count}})

    # A download that is done (or a service that never says more) goes on to Unlock
    assert after({"records": 3}, 0) == after({"more": False}, 5) == "UnlockAfterSuccess"
    # One with more to do is continued: the count goes up by one, and Download runs again
    assert after({"more": True}, 0) == after({"more": True}, limit - 1) == "ContinueDownload"
    continued = states["ContinueDownload"]
    assert continued["Parameters"] == {"count.$": "States.MathAdd($.continuation.count, 1)"}
    assert (continued["ResultPath"], continued["Next"]) == ("$.continuation", "Download")
    # Past the bound, the run fails by name through Download's failure path, ending in Unlock
    assert after({"more": True}, limit) == "TooManyContinuations"
    too_many = states["TooManyContinuations"]
    assert too_many["Result"]["Error"] == "DownloadContinuationsExceeded"
    assert f"continued {limit} times" in too_many["Result"]["Cause"]
    assert (too_many["ResultPath"], too_many["Next"]) == ("$.failure", "DownloadFailed")
    assert states["DownloadFailed"]["Next"] == "UnlockAfterFailure"


def test_a_run_the_ledger_says_succeeded_ends_succeeded_after_all(
    definition: dict[str, Any],
) -> None:
    # Given the data of a run whose Unlock task timed out after its unlock had committed
    states = definition["States"]
    failed_unlock = {
        "source_id": "s",
        "validation": {"decision": "run", "plan": {"flow_type": "normal"}},
        "download": {"records": 2},
        "failure": {"Error": "States.Timeout"},
        "failed_step": "Unlock",
    }
    choice = states[states["UnlockAfterFailure"]["Next"]]
    assert states["UnlockAfterFailure"]["ResultPath"] == "$.unlock"
    # (unlocking answers a run that already ended with its ledger row, as it ended)
    ledger_row = {
        "source_id": "s",
        "execution_arn": "arn:aws:states:eu-west-1:123456789012:execution:m:e",
        "status": "succeeded",
        "cursor_before": datetime(2026, 1, 1, tzinfo=UTC),
        "cursor_after": datetime(2026, 1, 2, tzinfo=UTC),
        "flow_type": "normal",
        "error_detail": None,
        **dict.fromkeys(VERSION_COUNTS, 0),
    }
    ledger_says = contracts.message(
        "unlocking-result",
        correlation_id="c",
        **unlocking.result_fields(ledger_row, lock_released=False),
    )

    # When unlocking answers the failure with the ledger's status, Then the run succeeds:
    # Run Succeeded (with what it reads there), no Run Failed, nobody alerted
    data = {**failed_unlock, "unlock": ledger_says}
    assert _choose(choice, data) == "PublishRunSucceeded"
    publish = states["PublishRunSucceeded"]
    [entry] = publish["Parameters"]["Entries"]
    assert entry["DetailType"] == "Run Succeeded"
    for key, path in entry["Detail"].items():
        if key.endswith(".$") and path.startswith("$."):
            _read(data, path)  # there: the failure came from Unlock, after Download
    assert states[publish["Next"]]["Type"] == "Succeed"

    # And a run the ledger says failed or cancelled, or an unlock that could not answer (whose
    # fallback result has no status), goes on to the failure's end
    for status in ("failed", "cancelled"):
        assert _choose(choice, {**data, "unlock": {**ledger_says, "status": status}}) == (
            "CancelledOrFailed"
        )
    fallback = states["UnlockAfterFailureFailed"]
    assert "status" not in fallback["Result"]
    assert _choose(choice, {**data, "unlock": fallback["Result"]}) == "CancelledOrFailed"


def test_only_a_run_that_says_it_needs_approval_waits_for_one(definition: dict[str, Any]) -> None:
    states = definition["States"]
    skip, approve = states["RunOrSkip"]["Choices"]
    assert skip["Next"] == "Skipped" and states["RunOrSkip"]["Default"] == "StartDownload"
    # A Choice on a missing variable fails the execution; IsPresent guards it.
    assert approve == {
        "Comment": approve["Comment"],
        "And": [
            {"Variable": "$.validation.approval_required", "IsPresent": True},
            {"Variable": "$.validation.approval_required", "BooleanEquals": True},
        ],
        "Next": "Approve",
    }
    assert states["Approve"]["Next"] == "StartDownload"
    assert states["Approve"]["TimeoutSeconds"] == CLOUD_TIMEOUTS.approval_seconds


def test_no_index_then_field_paths(definition: dict[str, Any]) -> None:
    # The emulator yields [value] for $.a[0].b, so a Choice on it silently takes the Default.
    text = str(definition)
    assert "][" not in text and "[0]." not in text


def test_substitutions_must_match_the_placeholders_exactly() -> None:
    good = state_machine_substitutions(
        {s: "u" for s in ("validation", "download", "unlocking")}, "bus", "topic", CLOUD_TIMEOUTS
    )
    with pytest.raises(ValueError, match="missing \\['EventBusName'\\]"):
        statemachine.render({k: v for k, v in good.items() if k != "EventBusName"})
    with pytest.raises(ValueError, match="unknown \\['Extra'\\]"):
        statemachine.render({**good, "Extra": "x"})
    assert "${" not in str(statemachine.render(good))


# -- the definition's literals are the catalogue's (shared/runtime/catalogue.py) ----------------


def test_a_failed_run_names_its_step_as_the_catalogue_does(definition: dict[str, Any]) -> None:
    states = definition["States"]
    # Each step runs in task states whose failures are remembered under the step's name
    for step in Step:
        for name in step.states:
            assert states[name]["Resource"] == CALLBACK, name
            remembered = {
                states[catch["Next"]].get("Result")
                for catch in states[name]["Catch"]
                if states[catch["Next"]].get("ResultPath") == "$.failed_step"
            }
            if name != "UnlockAfterFailure":  # it reports the failure it was given
                assert remembered == {step.value}, name
    failed_steps = {
        state["Result"] for state in states.values() if state.get("ResultPath") == "$.failed_step"
    }
    assert failed_steps == {step.value for step in Step}
    # and the contracts that carry a failed step allow exactly those
    common = json.loads((contracts.CONTRACTS_DIR / "common.v1.schema.json").read_text())
    assert common["$defs"]["failed_step"]["enum"] == [step.value for step in Step]


def test_the_events_the_definition_puts_are_the_catalogues(definition: dict[str, Any]) -> None:
    put = [
        entry
        for state in definition["States"].values()
        if state.get("Resource") == "arn:aws:states:::events:putEvents"
        for entry in state["Parameters"]["Entries"]
    ]
    assert {entry["DetailType"] for entry in put} == {
        DetailType.RUN_SUCCEEDED,
        DetailType.RUN_FAILED,
        DetailType.RUN_CANCELLED,
    }
    for entry in put:
        assert entry["Source"] == EVENT_SOURCE
        assert entry["Detail"]["schema"] == DetailType(entry["DetailType"]).contract


def test_a_failed_run_alerts_people_even_when_its_event_cannot_be_put(
    definition: dict[str, Any],
) -> None:
    # PublishRunFailed retries, then a failure it cannot put still reaches AlertPeople, keeping
    # the run's state (the alert names its source, step and failure), and ends the run failed
    states = definition["States"]
    publish = states["PublishRunFailed"]
    assert publish["Retry"]
    [catch] = publish["Catch"]
    assert catch["ErrorEquals"] == ["States.ALL"] and catch["Next"] == "AlertPeople"
    assert catch["ResultPath"] not in (None, "$")
    assert not catch["ResultPath"].startswith(("$.failure", "$.failed_step", "$.unlock"))
    assert states["AlertPeople"]["Next"] == "NameTheFailure"
    ends = {states[choice["Next"]]["Type"] for choice in states["NameTheFailure"]["Choices"]}
    assert ends | {states[states["NameTheFailure"]["Default"]]["Type"]} == {"Fail"}
