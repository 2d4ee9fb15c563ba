"""Freshness on the embedded stack (README, "Freshness"): a source run every minute that does not
succeed becomes overdue, one Source Overdue reaches the notifications queue however many ticks
see it, `sourceflow sources list` says so; after a success it is not, and Source Recovered says
so once.

Bounded: instead of waiting minutes, the test moves the source's history back (when it was
added and scheduled), which is what freshness measures from."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.runtime import contracts
from tests.e2e.harness import Harness

DAY = timedelta(days=1)
OVERDUE, RECOVERED = "Source Overdue", "Source Recovered"


def listed(harness: Harness, source_id: str) -> dict[str, Any]:
    completed = harness.sourceflow("sources", "list", "--json", person="alice")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    [row] = [row for row in json.loads(completed.stdout) if row["source_id"] == source_id]
    return row  # type: ignore[no-any-return]


def announcements(harness: Harness, source_id: str, kinds: set[str], timeout: float) -> set[str]:
    """Which of these events about the source reach the notifications queue within `timeout`."""
    found = harness.notifications(
        lambda event: f"{event['detail-type']}:{event['detail'].get('source_id')}",
        {f"{kind}:{source_id}" for kind in kinds},
        timeout=timeout,
    )
    for event in found.values():
        contracts.validate(event["detail"], event["detail"]["schema"])
    return {key.split(":")[0] for key in found}


def test_a_source_that_does_not_succeed_goes_overdue_once_and_recovers_with_a_success(
    harness: Harness,
) -> None:
    # Given a source added by command, run every minute, overdue after two minutes without a
    # success; added ten minutes ago, and since then held by a run that never ends
    dataset = harness.new_dataset([DAY / 2])
    source_id = f"fresh-{dataset}"
    connection = json.dumps({"base_url": harness.vendor.url, "dataset": dataset})
    added = harness.sourceflow(
        *("sources", "add", source_id, "--type", "http_api", "--connection", connection),
        *("--schedule-interval", "1m", "--overdue-after-periods", "2"),
        person="alice",
    )
    assert added.returncode == 0, added.stderr
    now = datetime.now(UTC)
    with harness.db.transaction() as cur:
        cur.execute(
            "UPDATE public.source_change SET changed_at = changed_at - interval '10 minutes'"
            " WHERE source_id = %s",
            (source_id,),
        )
        cur.execute(
            "UPDATE public.source SET created_at = created_at - interval '10 minutes'"
            " WHERE source_id = %s",
            (source_id,),
        )
    harness.set_lock(source_id, "arn:aws:states:stuck:execution:sm:x", now, now + DAY)

    # When the schedule ticks, twice
    harness.tick()
    harness.tick()

    # Then one Source Overdue reaches the notifications, and the list says overdue
    assert announcements(harness, source_id, {OVERDUE}, timeout=30) == {OVERDUE}
    row = listed(harness, source_id)
    assert (row["overdue"], row["last_success_at"], row["last_success_age"]) == (True, None, None)
    assert row["next_due_at"] is not None
    harness.tick()
    assert announcements(harness, source_id, {OVERDUE}, timeout=3) == set()

    # When the lock is released and the next scheduled run succeeds
    harness.set_lock(source_id, None)
    harness.tick()
    [execution] = harness.wait_for_executions(source_id, 1)
    assert harness.finish(execution["executionArn"], source_id).status == "SUCCEEDED"
    harness.tick()

    # Then Source Recovered, and the list says it is not overdue, its success seconds old
    assert announcements(harness, source_id, {RECOVERED}, timeout=30) == {RECOVERED}
    row = listed(harness, source_id)
    assert row["overdue"] is False
    assert row["last_success_age"].endswith("s")
