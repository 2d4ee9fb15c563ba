"""The scheduler on the embedded stack: ticks start the due runs, special flows go back to
Normal once their job is done, and only then."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from infra.resources import Names
from local.ticker import fire, scheduled_rules
from shared.rules.flows import DEFAULT_LATENESS_ALLOWANCE, overlap
from shared.rules.schedules import source_schedule
from shared.runtime import contracts
from shared.runtime.events import EventPublisher
from tests.e2e.harness import Harness, wait_for

DAY = timedelta(days=1)
NORMAL = {"flow_type": "Normal"}


def _params(harness: Harness, source_id: str) -> Any:
    return harness.run_source_row(source_id)["batch_execution_params"]


def _wait_for_params(harness: Harness, source_id: str, expected: Any) -> None:
    wait_for(
        lambda: _params(harness, source_id) == expected,
        f"the params of {source_id} to be {expected}",
    )


def test_a_tick_starts_exactly_the_due_sources(harness: Harness) -> None:
    # Given sources that are due (never scheduled) and sources that are not
    now = datetime.now(UTC)
    sources = {name: harness.new_source(harness.new_dataset([DAY])) for name in "ABCDEF"}
    harness.set_schedule(sources["A"], interval="1 minute")
    harness.set_schedule(sources["B"], cron="*/5 * * * *")
    slot = source_schedule("C", timedelta(hours=1), None).previous_slot(now)  # type: ignore[union-attr]
    harness.set_schedule(sources["C"], interval="1 hour", last_slot=slot)  # this slot ran
    # D has no schedule
    harness.set_schedule(sources["E"], interval="1 minute")
    with harness.db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET is_active = false WHERE source_id = %s", (sources["E"],)
        )
    harness.set_schedule(sources["F"], interval="1 minute")
    harness.set_lock(sources["F"], "arn:other", now, now + timedelta(minutes=10))

    # When the schedule rule fires
    harness.tick()

    # Then A and B each got one run, named after their slot, and it succeeded
    for name in "AB":
        [execution] = harness.wait_for_executions(sources[name], 1)
        assert execution["name"].endswith("-sched")
        result = harness.finish(execution["executionArn"], sources[name])
        assert result.status == "SUCCEEDED", result
    # And C (slot taken), D (no schedule), E (inactive), F (locked) got none
    for name in "CDEF":
        assert harness.executions_of(sources[name]) == [], name


def test_two_ticks_in_the_same_slot_start_one_execution(harness: Harness) -> None:
    # Given an hourly source
    source_id = harness.new_source(harness.new_dataset([DAY]))
    harness.set_schedule(source_id, interval="1 hour")

    # When the same slot is ticked three times: two separate ticks and one redelivered
    at = datetime.now(UTC)
    harness.tick(at=at)
    harness.tick(at=at + timedelta(seconds=5))
    (rule,) = scheduled_rules(harness.aws("events"), Names("local").prefix)
    fire(rule, harness.aws("sqs"), at)
    harness.wait_for_scheduler()

    # Then one execution exists for the slot
    executions = harness.wait_for_executions(source_id, 1)
    time.sleep(1)
    assert len(harness.executions_of(source_id)) == len(executions) == 1


def test_a_successful_special_flow_is_reset_to_normal_on_the_next_tick(harness: Harness) -> None:
    # Given a source whose Re-specs run succeeded
    dataset = harness.new_dataset([DAY])
    source_id = harness.new_source(dataset, runtime_count=3, cursor=datetime.now(UTC) - 2 * DAY)
    sql = f"UPDATE public.listing_attributes SET value = 'x' WHERE source_id = '{source_id}'"
    respecs = {"type": "Re-specs", "Sql": sql}
    harness.set_params(source_id, respecs)
    assert harness.run(source_id).status == "SUCCEEDED"

    # When the scheduler ticks
    harness.tick()

    # Then the params are Normal, the history says the scheduler did it and why, and a
    # Flow Reset Applied event announces it
    _wait_for_params(harness, source_id, NORMAL)
    change = harness.flow_history(source_id)[-1]
    assert (change["from_params"], change["to_params"]) == (respecs, NORMAL)
    assert change["changed_by"] == "sourceflow_scheduler"  # the scheduler's own login
    assert "special flow succeeded" in change["reason"]
    events = harness.notifications(
        lambda e: (
            e["detail"].get("source_id") if e["detail-type"] == "Flow Reset Applied" else None
        ),
        {source_id},
    )
    applied = events[source_id]["detail"]
    contracts.validate(applied, "flow-reset-applied")
    assert applied["request_id"] == change["request_id"]


def test_the_first_run_full_load_goes_back_to_normal(harness: Harness) -> None:
    source_id = harness.new_source(harness.new_dataset([DAY]))
    first = harness.run(source_id)
    assert first.status == "SUCCEEDED"
    assert first.source["batch_execution_params"] == {"type": "Full Load"}  # type: ignore[index]
    harness.tick()
    _wait_for_params(harness, source_id, NORMAL)
    second = harness.run(source_id)
    assert second.run["flow_type"] == "normal"
    cursor = first.source["last_modified_date"]  # type: ignore[index]
    assert second.run["window_start"] == cursor - overlap(DEFAULT_LATENESS_ALLOWANCE)


def test_a_failed_special_flow_is_not_reset(harness: Harness) -> None:
    # Given a Re-specs run that failed (its query fails in PostgreSQL)
    source_id = harness.new_source(
        harness.new_dataset([DAY]), runtime_count=3, cursor=datetime.now(UTC) - 2 * DAY
    )
    params = {
        "type": "Re-specs",
        "sql": "UPDATE public.listing_attributes SET no_such_column = 1"
        f" WHERE source_id = '{source_id}'",
    }
    harness.set_params(source_id, params)
    assert harness.run(source_id).status == "FAILED"

    # When the scheduler ticks, Then the flow stays
    harness.tick()
    assert _params(harness, source_id) == params


def test_a_locked_source_is_not_reset_until_its_run_ends(harness: Harness) -> None:
    # Given a Sold source whose run succeeded, now held by another execution
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    sold = {"type": "Sold"}
    harness.set_params(source_id, sold)
    assert harness.run(source_id).status == "SUCCEEDED"
    now = datetime.now(UTC)
    harness.set_lock(source_id, "arn:another-run", now, now + timedelta(minutes=10))

    # When the scheduler ticks, and even when a reset request arrives for it
    harness.tick()
    _request_reset(harness, source_id, expected=sold)
    harness.wait_for_scheduler()

    # Then it stays Sold while locked
    assert _params(harness, source_id) == sold

    # And once the lock is gone the next tick resets it
    harness.set_lock(source_id, None)
    harness.tick()
    _wait_for_params(harness, source_id, NORMAL)


def test_an_operator_edit_after_the_decision_wins(harness: Harness) -> None:
    # Given a reset decided while the source was Sold
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    harness.set_params(source_id, {"type": "Sold"})
    # When an operator switches it to Full Load before the reset is applied
    harness.set_params(source_id, {"type": "Full Load"})
    _request_reset(harness, source_id, expected={"type": "Sold"})
    harness.wait_for_scheduler()
    # Then the operator's edit stands and the history has no reset
    assert _params(harness, source_id) == {"type": "Full Load"}
    assert all(
        change["changed_by"] != "sourceflow_scheduler" for change in harness.flow_history(source_id)
    )


def test_reset_at_resets_a_flow_without_a_run(harness: Harness) -> None:
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    harness.set_params(source_id, {"type": "Sold", "reset_at": "2020-01-01T00:00:00Z"})
    harness.tick()
    _wait_for_params(harness, source_id, NORMAL)
    assert "reset at passed" in harness.flow_history(source_id)[-1]["reason"]


def test_a_run_requested_event_starts_one_run_even_if_delivered_twice(harness: Harness) -> None:
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    event = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Run Requested",
        "source": "sourceflow",
        "time": datetime.now(UTC).isoformat(),
        "detail": contracts.message(
            "run-requested", correlation_id="test", source_id=source_id, requested_by="pytest"
        ),
    }
    sqs = harness.aws("sqs")
    for _ in range(2):
        sqs.send_message(
            QueueUrl=harness.stack.env["SCHEDULER_QUEUE_URL"], MessageBody=json.dumps(event)
        )
    harness.wait_for_scheduler()
    [execution] = harness.wait_for_executions(source_id, 1)
    assert harness.finish(execution["executionArn"], source_id).status == "SUCCEEDED"

    # And published on the bus (what `sourceflow run` does), it reaches the scheduler too
    EventPublisher(harness.aws("events"), harness.stack.env["EVENT_BUS_NAME"])(
        "Run Requested", {"source_id": source_id, "requested_by": "pytest"}
    )
    harness.wait_for_executions(source_id, 2)


def _request_reset(harness: Harness, source_id: str, expected: Any) -> None:
    EventPublisher(harness.aws("events"), harness.stack.env["EVENT_BUS_NAME"])(
        "Flow Reset Requested",
        {
            "source_id": source_id,
            "expected_params": expected,
            "cause": "reset_at_passed",
            "decided_at": datetime.now(UTC).isoformat(),
        },
    )
