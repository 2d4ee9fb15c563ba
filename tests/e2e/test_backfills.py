"""Backfills on the embedded stack: `sourceflow backfill` asks, the scheduler runs one slice per
tick through the state machine, each slice its own `backfill` run; the records of the range land
exactly, the cursor never moves, Normal runs go on between slices, `runs` and `audit` show the
backfill as such; a long one waits for a second person."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.rules.backfills import slice_nonce
from shared.rules.flows import DEFAULT_LATENESS_ALLOWANCE, overlap
from shared.runtime.executions import execution_name, start_run
from shared.store.backfills import record_attempt
from shared.timefmt import isoformat, parse_iso
from tests.builders import timeline
from tests.e2e.harness import Harness
from tests.e2e.harness.backfills import backfill_executions, next_slice

DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def sourceflow_json(harness: Harness, *args: str, person: str | None = None) -> Any:
    completed = harness.sourceflow(*args, "--json", person=person)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def timeline_of(harness: Harness, source_id: str) -> tuple[Any, ...]:
    return timeline(harness.run_source_row(source_id))


def test_a_backfill_of_three_slices_lands_exactly_its_range_beside_the_normal_runs(
    harness: Harness,
) -> None:
    # Given a vendor dataset with records in three days of the past, on and around their edges,
    # and one recent record; and a source that has run before (its cursor two hours ago)
    now = datetime.now(UTC).replace(microsecond=0)
    t1 = (now - 10 * DAY).replace(hour=0, minute=0, second=0)
    t2 = t1 + 3 * DAY
    stamps = [
        t1 - SECOND,  # before the range
        t1,  # its first instant
        t1 + 5 * timedelta(hours=1),
        t1 + DAY - SECOND,  # the last second of slice 1
        t1 + DAY,  # the first of slice 2
        t1 + 2 * DAY + 3 * timedelta(hours=1),
        t2 - SECOND,  # the range's last second
        t2,  # after the range
        now - timedelta(hours=1),  # new since the cursor: the Normal run's
    ]
    dataset = harness.new_dataset([now - stamp for stamp in stamps], now=now)
    expected = {f"{dataset}-{index:05d}" for index, stamp in enumerate(stamps) if t1 <= stamp < t2}
    assert len(expected) == 6
    cursor = now - 2 * timedelta(hours=1)
    source_id = harness.new_source(dataset, cursor=cursor, runtime_count=5)
    before = timeline_of(harness, source_id)

    # When alice asks for a backfill of [t1, t2) in slices of a day
    asked = sourceflow_json(
        harness,
        "backfill",
        source_id,
        "--from",
        isoformat(t1),
        "--to",
        isoformat(t2),
        "--slice",
        "1d",
        person="alice",
    )
    assert (asked["status"], asked["state"]) == ("active", "ready")
    assert (asked["slice_count"], asked["requested_by"]) == (3, "alice")

    # And the scheduler ticks: the first slice runs, and leaves the source's timeline alone
    slices = [next_slice(harness, source_id)]
    assert timeline_of(harness, source_id) == before
    # And a Normal run goes between the slices, from the cursor, as ever
    normal = harness.run(source_id)
    assert normal.status == "SUCCEEDED", normal
    assert (normal.run["flow_type"], normal.run["records"]) == ("normal", 1)
    assert normal.run["window_start"] == cursor - overlap(DEFAULT_LATENESS_ALLOWANCE)
    after_normal = timeline_of(harness, source_id)
    assert after_normal[0] == stamps[-1]  # the cursor followed the Normal run's record
    # And the next ticks run the other two slices
    slices += [next_slice(harness, source_id), next_slice(harness, source_id)]

    # Then the three slices were three backfill runs of the three days, in order
    assert [s.status for s in slices] == ["SUCCEEDED"] * 3, slices
    assert [(s.run["flow_type"], s.run["status"]) for s in slices] == [
        ("backfill", "succeeded")
    ] * 3
    assert [(s.run["window_start"], s.run["window_end"]) for s in slices] == [
        (t1, t1 + DAY),
        (t1 + DAY, t1 + 2 * DAY),
        (t1 + 2 * DAY, t2),
    ]
    # And together they landed exactly the records of [t1, t2), each once, each in its slice
    landed: list[str] = []
    for result in slices:
        manifest, records = harness.raw_output(result)
        assert manifest["flow_type"] == "backfill"
        assert (manifest["window"]["start_inclusive"], manifest["window"]["end_inclusive"]) == (
            True,
            False,
        )
        for record in records:
            assert result.run["window_start"] <= parse_iso(record["last_modified"])
            assert parse_iso(record["last_modified"]) < result.run["window_end"]
        landed += [record["id"] for record in records]
    assert sorted(landed) == sorted(expected)
    assert [s.run["records"] for s in slices] == [3, 1, 2]
    # And the cursor, landed_since, params and runtime count are what the Normal run left
    assert timeline_of(harness, source_id) == after_normal
    for result in slices:
        assert result.run["cursor_before"] == result.run["cursor_after"]

    # And a further tick starts nothing; the backfill says it succeeded
    harness.tick()
    assert len(backfill_executions(harness, source_id)) == 3
    [listed] = sourceflow_json(harness, "backfill", "list", "--source", source_id)
    assert (listed["backfill_id"], listed["state"], listed["slices"]) == (
        asked["backfill_id"],
        "succeeded",
        "3/3",
    )
    # And `runs` shows each slice as the backfill's, `audit` lists them apart from the
    # Normal timeline, which has no gap
    runs = sourceflow_json(harness, "runs", "--source", source_id)
    assert sorted(run["backfill"] or run["flow_type"] for run in runs) == [
        f"{asked['backfill_id']} slice 1",
        f"{asked['backfill_id']} slice 2",
        f"{asked['backfill_id']} slice 3",
        "normal",
    ]
    audit = harness.sourceflow("audit", source_id, "--json")
    assert audit.returncode == 0, audit.stdout
    audited = json.loads(audit.stdout)
    assert [run["flow_type"] for run in audited["runs"]] == ["normal"]
    assert [run["flow_type"] for run in audited["backfills"]] == ["backfill"] * 3
    assert audited["gaps"] == []


def test_a_long_backfill_waits_for_a_second_person_and_can_be_cancelled(
    harness: Harness,
) -> None:
    # Given a source, and forty days of its past (over its 31 days' approval threshold)
    now = datetime.now(UTC).replace(microsecond=0)
    t1 = (now - 60 * DAY).replace(hour=0, minute=0, second=0)
    dataset = harness.new_dataset([now - (t1 + DAY), now - (t1 + 25 * DAY)], now=now)
    source_id = harness.new_source(dataset, cursor=now - timedelta(hours=1), runtime_count=5)
    before = timeline_of(harness, source_id)

    # When alice asks for it
    asking = harness.sourceflow(
        "backfill",
        source_id,
        "--from",
        isoformat(t1),
        "--to",
        isoformat(t1 + 40 * DAY),
        "--slice",
        "20d",
        person="alice",
    )
    # Then it waits for a second person, and a tick starts nothing
    assert asking.returncode == 0, asking.stderr
    assert "awaiting approval: it spans more than" in asking.stdout
    [listed] = sourceflow_json(harness, "backfill", "list", "--source", source_id)
    backfill_id = str(listed["backfill_id"])
    assert (listed["state"], listed["requested_by"]) == ("awaiting_approval", "alice")
    harness.tick()
    assert backfill_executions(harness, source_id) == []

    # When alice approves it herself, or the administrator (no person) does, Then both are refused
    herself = harness.sourceflow("backfill", "approve", backfill_id, person="alice")
    assert herself.returncode == 1
    assert f"alice asked for backfill {backfill_id}, so a second person must approve" in (
        herself.stderr
    )
    admin = harness.sourceflow("backfill", "approve", backfill_id)
    assert admin.returncode == 1 and "is not a person" in admin.stderr

    # When bob approves it, Then its first slice runs at the next tick
    approved = harness.sourceflow("backfill", "approve", backfill_id, person="bob")
    assert approved.returncode == 0, approved.stderr
    assert "approved: now ready" in approved.stdout
    first = next_slice(harness, source_id)
    assert first.status == "SUCCEEDED", first
    assert (first.run["window_start"], first.run["window_end"]) == (t1, t1 + 20 * DAY)
    assert first.run["records"] == 1

    # When alice cancels it, Then no further slice starts, and the source is as it was
    cancelled = harness.sourceflow(
        "backfill", "cancel", backfill_id, "--reason", "enough", person="alice"
    )
    assert cancelled.returncode == 0, cancelled.stderr
    harness.tick()
    assert len(backfill_executions(harness, source_id)) == 1
    [listed] = sourceflow_json(harness, "backfill", "list", "--source", source_id)
    assert (listed["state"], listed["slices"], listed["decided_by"], listed["cancelled_by"]) == (
        "cancelled",
        "1/2",
        "bob",
        "alice",
    )
    assert timeline_of(harness, source_id) == before

    # And a slice execution the scheduler had started just before the cancel (recorded, not yet
    # validated) ends cancelled when validation meets it: no lock taken, no alert
    now = datetime.now(UTC)
    name = execution_name(source_id, now, slice_nonce(int(backfill_id), 2, 1))
    with harness.db.transaction() as cur:
        record_attempt(
            cur,
            backfill_id=int(backfill_id),
            slice_number=2,
            attempt=1,
            execution_name=name,
            started_at=now,
        )
    arn = start_run(
        harness.aws("stepfunctions"),
        harness.stack.env["STATE_MACHINE_ARN"],
        source_id,
        started=now,
        nonce=slice_nonce(int(backfill_id), 2, 1),
    )
    late = harness.finish(arn, source_id)
    assert (late.status, late.error) == ("FAILED", "RunCancelled"), late
    assert (late.run["status"], late.run["failed_step"]) == ("cancelled", "Validate")
    assert (
        f"backfill {backfill_id} of source {source_id!r} is cancelled" in late.run["error_detail"]
    )
    assert harness.alerts_about(source_id) == []
    assert timeline_of(harness, source_id) == before
