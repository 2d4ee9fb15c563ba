"""The scheduler's decisions: which sources are due, which special flows go back to Normal,
whether a reset request still applies when it arrives, and the run a due slot or a `Run
Requested` event waits as until it is admitted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.scheduler.domain import (
    NORMAL_PARAMS,
    PARAMS_CHANGED,
    Due,
    ResetCandidate,
    ResetDecision,
    SchedulableSource,
    decide_resets,
    due_sources,
    requested_run,
    reset_applied,
    reset_requested,
    scheduled_run,
    why_not_reset,
)
from shared.runtime.executions import execution_name

NOW = datetime(2026, 11, 22, 19, 7, 30, tzinfo=UTC)
CURRENT_SLOT = datetime(2026, 11, 22, 19, 0, tzinfo=UTC)  # of a 15-minute schedule at NOW
PREVIOUS_SLOT = datetime(2026, 11, 22, 18, 45, tzinfo=UTC)
RUN_ARN = "arn:aws:states:us-east-1:123456789012:execution:sourceflow:src-1-20261122T1800-sched"
SQL = "UPDATE listing SET color = 'red' WHERE id = 7"


# --- factories --------------------------------------------------------------------------------


def schedulable(
    source_id: str = "src-1",
    *,
    interval: timedelta | None = timedelta(minutes=15),
    cron: str | None = None,
    last_slot: datetime | None = None,
    locked_by: str | None = None,
    lock_expires_at: datetime | None = None,
) -> SchedulableSource:
    return SchedulableSource(
        source_id=source_id,
        schedule_interval=interval,
        schedule_cron=cron,
        last_scheduled_slot=last_slot,
        locked_by=locked_by,
        lock_expires_at=lock_expires_at,
    )


def candidate(
    params: dict[str, Any] | None,
    *,
    source_id: str = "src-1",
    params_changed_at: datetime = NOW - timedelta(hours=2),
    success_params: dict[str, Any] | None = None,
    success_finished_at: datetime | None = None,
    locked_by: str | None = None,
    lock_expires_at: datetime | None = None,
) -> ResetCandidate:
    """A source with `params`; with a last successful run if `success_params` is given."""
    succeeded = success_params is not None
    return ResetCandidate(
        source_id=source_id,
        batch_execution_params=params,
        params_changed_at=params_changed_at,
        locked_by=locked_by,
        lock_expires_at=lock_expires_at,
        last_success_arn=RUN_ARN if succeeded else None,
        last_success_params=success_params,
        last_success_finished_at=(success_finished_at or NOW - timedelta(hours=1))
        if succeeded
        else None,
    )


def run_requested_event(event_id: str = "0d9f7b5e-1c2a-4b7e-9a51-3e6f2c4d8a10") -> dict[str, Any]:
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "Run Requested",
        "source": "sourceflow",
        "account": "123456789012",
        "time": "2026-11-22T18:41:57Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "schema": "run-requested",
            "version": 1,
            "correlation_id": "op-1",
            "produced_at": "2026-11-22T18:41:56.5Z",
            "source_id": "src-1",
            "requested_by": "jdoe",
        },
    }


# --- due_sources ------------------------------------------------------------------------------


def test_a_source_never_scheduled_is_due_at_its_previous_slot() -> None:
    due, problems = due_sources([schedulable(last_slot=None)], NOW)
    assert due == [Due("src-1", CURRENT_SLOT)]
    assert problems == []


def test_a_source_already_scheduled_for_the_current_slot_is_not_due() -> None:
    due, _ = due_sources([schedulable(last_slot=CURRENT_SLOT)], NOW)
    assert due == []


def test_a_source_last_scheduled_for_an_older_slot_is_due_at_the_current_one() -> None:
    due, _ = due_sources([schedulable(last_slot=PREVIOUS_SLOT)], NOW)
    assert due == [Due("src-1", CURRENT_SLOT)]


def test_a_source_scheduled_long_ago_is_due_once_not_once_per_missed_slot() -> None:
    due, _ = due_sources([schedulable(last_slot=NOW - timedelta(days=3))], NOW)
    assert due == [Due("src-1", CURRENT_SLOT)]


def test_a_source_on_a_cron_is_due_at_its_cron_slot() -> None:
    due, _ = due_sources([schedulable(interval=None, cron="0 */6 * * *")], NOW)
    assert due == [Due("src-1", datetime(2026, 11, 22, 18, 0, tzinfo=UTC))]


def test_a_source_locked_by_a_run_with_an_unexpired_lease_is_not_due() -> None:
    source = schedulable(
        last_slot=PREVIOUS_SLOT, locked_by=RUN_ARN, lock_expires_at=NOW + timedelta(minutes=5)
    )
    due, problems = due_sources([source], NOW)
    assert due == []
    assert problems == []


def test_a_source_whose_lock_lease_expired_is_due() -> None:
    source = schedulable(
        last_slot=PREVIOUS_SLOT, locked_by=RUN_ARN, lock_expires_at=NOW - timedelta(seconds=1)
    )
    due, _ = due_sources([source], NOW)
    assert due == [Due("src-1", CURRENT_SLOT)]


def test_a_source_without_a_schedule_is_not_due() -> None:
    due, problems = due_sources([schedulable(interval=None, cron=None)], NOW)
    assert due == []
    assert problems == []


def test_an_invalid_schedule_is_reported_while_the_other_sources_are_decided() -> None:
    # Given one source with a broken cron between two healthy ones
    sources = [
        schedulable("src-a"),
        schedulable("src-broken", interval=None, cron="61 * * * *"),
        schedulable("src-both", interval=timedelta(minutes=5), cron="*/5 * * * *"),
        schedulable("src-c", last_slot=PREVIOUS_SLOT),
    ]
    # When the tick decides
    due, problems = due_sources(sources, NOW)
    # Then the healthy ones are due and each broken one is a problem naming it
    assert due == [Due("src-a", CURRENT_SLOT), Due("src-c", CURRENT_SLOT)]
    assert len(problems) == 2
    assert "'src-broken'" in problems[0]
    assert "schedule_cron" in problems[0]
    assert "'src-both'" in problems[1]


def test_a_cron_whose_day_never_comes_is_a_problem_not_a_failed_tick() -> None:
    # Given a source whose cron names 30 February, stored before anything checked it
    sources = [schedulable("src-never", interval=None, cron="0 0 30 2 *"), schedulable("src-a")]
    # When the tick decides, Then the other source is due and the bad one named
    due, problems = due_sources(sources, NOW)
    assert due == [Due("src-a", CURRENT_SLOT)]
    [problem] = problems
    assert "'src-never'" in problem and "never comes" in problem


def test_no_sources_means_nothing_due() -> None:
    assert due_sources([], NOW) == ([], [])


# --- decide_resets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        None,
        {},
        {"flow_type": None},
        {"flow_type": "Normal"},
        {"type": "NORMAL"},
        {"type": "normal"},
        {"type": "Normal", "reset_at": "2026-01-01T00:00:00Z"},
    ],
)
def test_a_normal_flow_is_never_reset(params: dict[str, Any] | None) -> None:
    source = candidate(params, success_params={"flow_type": "Normal"})
    assert decide_resets([source], NOW) == []


def test_a_special_flow_whose_exact_params_succeeded_after_being_set_is_reset() -> None:
    # Given hand-written Re-specs params and a run that recorded their canonical form
    current = {"type": "RE-SPECS", "Sql": SQL}
    source = candidate(
        current,
        params_changed_at=NOW - timedelta(hours=2),
        success_params={"flow_type": "Re-specs", "sql": SQL},
        success_finished_at=NOW - timedelta(hours=1),
    )
    # When the tick decides
    decisions = decide_resets([source], NOW)
    # Then the source goes back to Normal, citing the run, expecting the params as written
    assert decisions == [ResetDecision("src-1", current, "special_flow_succeeded", RUN_ARN)]


@pytest.mark.parametrize(
    ("current", "recorded"),
    [
        ({"type": "Full Load"}, {"flow_type": "Full Load"}),
        ({"type": "backdated"}, {"flow_type": "Full Load"}),
        ({"type": "SOLD", "year": 2021}, {"flow_type": "Sold", "year": 2021}),
        ({"flow_type": "Sold"}, {"flow_type": "Sold"}),
    ],
)
def test_every_special_flow_is_reset_after_its_success(
    current: dict[str, Any], recorded: dict[str, Any]
) -> None:
    decisions = decide_resets([candidate(current, success_params=recorded)], NOW)
    assert [d.cause for d in decisions] == ["special_flow_succeeded"]


def test_a_success_finishing_the_moment_the_params_were_set_counts() -> None:
    moment = NOW - timedelta(hours=1)
    source = candidate(
        {"type": "Full Load"},
        params_changed_at=moment,
        success_params={"flow_type": "Full Load"},
        success_finished_at=moment,
    )
    assert len(decide_resets([source], NOW)) == 1


def test_a_success_that_finished_before_the_params_were_set_does_not_reset() -> None:
    # Given the same Re-specs ran and succeeded yesterday, and an operator set it again today
    source = candidate(
        {"type": "Re-specs", "sql": SQL},
        params_changed_at=NOW - timedelta(hours=1),
        success_params={"flow_type": "Re-specs", "sql": SQL},
        success_finished_at=NOW - timedelta(days=1),
    )
    # Then the new request has not run yet
    assert decide_resets([source], NOW) == []


@pytest.mark.parametrize(
    ("current", "recorded"),
    [
        (
            {"type": "Re-specs", "sql": SQL},
            {"flow_type": "Re-specs", "sql": "UPDATE listing SET color = 'blue'"},
        ),
        ({"type": "Sold", "year": 2021}, {"flow_type": "Sold", "year": 2020}),
        ({"type": "Sold", "year": 2021}, {"flow_type": "Sold"}),
        ({"type": "Sold"}, {"flow_type": "Full Load"}),
        ({"type": "Full Load"}, {"flow_type": "Normal"}),
    ],
)
def test_a_success_of_other_params_does_not_reset(
    current: dict[str, Any], recorded: dict[str, Any]
) -> None:
    assert decide_resets([candidate(current, success_params=recorded)], NOW) == []


def test_a_special_flow_that_has_not_run_is_not_reset() -> None:
    assert decide_resets([candidate({"type": "Full Load"})], NOW) == []


def test_a_locked_source_is_not_reset_even_when_its_job_is_done() -> None:
    source = candidate(
        {"type": "Full Load", "reset_at": "2026-11-01T00:00:00Z"},
        success_params={"flow_type": "Full Load", "reset_at": "2026-11-01T00:00:00Z"},
        locked_by=RUN_ARN,
        lock_expires_at=NOW + timedelta(minutes=10),
    )
    assert decide_resets([source], NOW) == []


def test_a_source_whose_lock_lease_expired_is_reset() -> None:
    source = candidate(
        {"type": "Full Load"},
        success_params={"flow_type": "Full Load"},
        locked_by=RUN_ARN,
        lock_expires_at=NOW - timedelta(minutes=1),
    )
    assert [d.source_id for d in decide_resets([source], NOW)] == ["src-1"]


@pytest.mark.parametrize("reset_at", ["2026-11-22T19:00:00Z", "2026-11-22T20:07:30+01:00"])
def test_a_reset_at_in_the_past_resets_without_evidence_even_with_no_run(reset_at: str) -> None:
    # Given a special flow that never ran, whose reset_at has passed (or is exactly now)
    current = {"type": "Sold", "year": 2021, "reset_at": reset_at}
    # When the tick decides
    decisions = decide_resets([candidate(current)], NOW)
    # Then it goes back to Normal for that reason alone
    assert decisions == [ResetDecision("src-1", current, "reset_at_passed", None)]


def test_a_passed_reset_at_wins_over_a_matching_success() -> None:
    current = {"type": "Full Load", "reset_at": "2026-11-22T00:00:00Z"}
    source = candidate(
        current, success_params={"flow_type": "Full Load", "reset_at": "2026-11-22T00:00:00Z"}
    )
    assert decide_resets([source], NOW) == [
        ResetDecision("src-1", current, "reset_at_passed", None)
    ]


def test_a_reset_at_in_the_future_does_not_reset() -> None:
    current = {"type": "Full Load", "reset_at": "2026-11-23T00:00:00Z"}
    assert decide_resets([candidate(current)], NOW) == []


@pytest.mark.parametrize(
    "params",
    [
        {"type": "Weekly"},
        {"type": "Re-specs"},
        {"type": "Sold", "year": "2021"},
        {"type": "Full Load", "reset_at": "tomorrow"},
        {"type": "Full Load", "colour": "red"},
    ],
)
def test_malformed_params_are_skipped_silently_while_others_are_decided(
    params: dict[str, Any],
) -> None:
    # Given a source with malformed params next to one whose job is done
    broken = candidate(params, source_id="src-broken", success_params={"flow_type": "Full Load"})
    done = candidate(
        {"type": "Full Load"}, source_id="src-done", success_params={"flow_type": "Full Load"}
    )
    # When the tick decides
    decisions = decide_resets([broken, done], NOW)
    # Then only the healthy source is reset and nothing is raised
    assert [d.source_id for d in decisions] == ["src-done"]


def test_the_decision_expects_the_params_as_stored_not_their_canonical_form() -> None:
    # Given params with stray spaces around the query, which canonical form strips
    current = {"type": "RE-SPECS", "Sql": f"  {SQL}  "}
    source = candidate(current, success_params={"flow_type": "Re-specs", "sql": SQL})
    # When the reset is decided
    (decision,) = decide_resets([source], NOW)
    # Then the reset will only apply while the column still holds exactly what was seen
    assert decision.expected_params == {"type": "RE-SPECS", "Sql": f"  {SQL}  "}


# --- why_not_reset: a reset request when it arrives ------------------------------------------


def locked_source(params: dict[str, Any] | None, **changes: Any) -> dict[str, Any]:
    """The source's row as the reset's transaction locked it."""
    return {"batch_execution_params": params, "locked_by": None, "lock_expires_at": None, **changes}


def test_a_reset_applies_while_the_params_are_those_the_decision_saw_and_nobody_runs() -> None:
    current = {"type": "Full Load"}
    assert why_not_reset(locked_source(current), current, NOW) is None


def test_a_reset_of_a_source_that_no_longer_exists_is_dropped() -> None:
    assert why_not_reset(None, {"type": "Full Load"}, NOW) == "the source no longer exists"


def test_an_operators_edit_after_the_decision_wins_over_the_reset() -> None:
    edited = locked_source({"type": "Sold", "year": 2021})
    assert why_not_reset(edited, {"type": "Full Load"}, NOW) == PARAMS_CHANGED


def test_a_reset_waits_for_the_run_that_holds_the_lock() -> None:
    current = {"type": "Full Load"}
    source = locked_source(current, locked_by=RUN_ARN, lock_expires_at=NOW + timedelta(minutes=5))
    reason = why_not_reset(source, current, NOW)
    assert reason is not None and RUN_ARN in reason and "next tick" in reason


def test_a_lock_whose_lease_expired_does_not_hold_the_reset_back() -> None:
    current = {"type": "Full Load"}
    source = locked_source(current, locked_by=RUN_ARN, lock_expires_at=NOW - timedelta(minutes=5))
    assert why_not_reset(source, current, NOW) is None


# --- the reset events' details -----------------------------------------------------------------


def test_a_reset_request_names_its_evidence_only_when_there_is_one() -> None:
    current = {"type": "Full Load"}
    with_evidence = ResetDecision("src-1", current, "special_flow_succeeded", RUN_ARN)
    without = ResetDecision("src-1", current, "reset_at_passed", None)
    assert reset_requested(with_evidence, NOW) == {
        "source_id": "src-1",
        "expected_params": current,
        "cause": "special_flow_succeeded",
        "decided_at": "2026-11-22T19:07:30Z",
        "evidence_execution_arn": RUN_ARN,
    }
    assert "evidence_execution_arn" not in reset_requested(without, NOW)


def test_an_applied_reset_says_from_what_to_normal() -> None:
    applied = reset_applied("src-1", {"type": "Full Load"}, "reset_at_passed", "request-1")
    assert applied == {
        "source_id": "src-1",
        "from_params": {"type": "Full Load"},
        "to_params": NORMAL_PARAMS,
        "cause": "reset_at_passed",
        "request_id": "request-1",
    }


# --- requested_run, scheduled_run ------------------------------------------------------------


def test_a_run_request_waits_as_one_run_of_its_source_at_the_event_time() -> None:
    # Given a Run Requested event, When the run it asks for is made
    run = requested_run(run_requested_event())
    # Then it is a run of its source, timed by the event, named as it will be started
    assert run.source_id == "src-1"
    assert run.started_for == datetime(2026, 11, 22, 18, 41, 57, tzinfo=UTC)
    assert run.started_for.utcoffset() == timedelta(0)
    assert run.execution_name == execution_name("src-1", run.started_for, run.nonce)


def test_the_same_event_delivered_twice_names_the_same_run() -> None:
    assert requested_run(run_requested_event("event-1")) == requested_run(
        run_requested_event("event-1")
    )


def test_different_events_name_different_runs() -> None:
    runs = {requested_run(run_requested_event(event_id)) for event_id in ("e-1", "e-2", "e-3")}
    assert len({run.execution_name for run in runs}) == len({run.nonce for run in runs}) == 3


def test_the_nonce_is_a_short_name_safe_token() -> None:
    nonce = requested_run(run_requested_event()).nonce
    assert nonce.startswith("req")
    assert nonce.isalnum()
    assert len(nonce) <= 16


def test_a_due_slot_waits_as_the_run_named_after_its_slot() -> None:
    run = scheduled_run(Due("src-1", CURRENT_SLOT))
    assert (run.source_id, run.started_for, run.nonce) == ("src-1", CURRENT_SLOT, "sched")
    assert run.execution_name == "src-1-20261122T190000Z-sched"
