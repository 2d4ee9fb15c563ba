"""A burst of sources due at once on the embedded stack (issue 17): more runs than download
workers, each download longer than a worker's share of the Download task's HeartbeatSeconds.
Without admission the downloads queue behind each other with their heartbeat clocks running
and the last ones time out (States.Timeout at Download); with it every run succeeds."""

from __future__ import annotations

from datetime import datetime

from bench.orchestration import step_spans
from tests.e2e.harness import RUN_SECONDS, Harness
from tests.e2e.harness.stack import HEARTBEAT_SECONDS

SOURCES = 10
# Each download takes about PAGES times PAGE_DELAY_MS: with two workers, ten of them one after
# the other keep the last one waiting for four downloads (some 30 s), past the 20 s heartbeat.
PAGES, PAGE_DELAY_MS = 8, 1000


def test_a_burst_of_sources_due_at_once_all_succeed_none_waiting_past_its_heartbeat(
    harness: Harness,
) -> None:
    # Given ten sources due at once, each a download of about eight seconds, on a stack whose
    # two download workers make two downloads at once (the admission capacity)
    capacity = harness.stack.options.workers_per_service
    assert PAGES * PAGE_DELAY_MS / 1000 * (SOURCES / capacity - 1) > HEARTBEAT_SECONDS
    sources = [
        harness.slow_source(PAGES, PAGE_DELAY_MS, runtime_count=2).source_id for _ in range(SOURCES)
    ]
    for source_id in sources:
        harness.set_schedule(source_id, interval="1 minute")

    # When the schedule rule fires
    harness.tick()

    # Then every source ran once, and succeeded with all its records
    histories = {}
    for source_id in sources:
        [execution] = harness.wait_for_executions(source_id, 1, timeout=RUN_SECONDS)
        result = harness.finish(execution["executionArn"], source_id)
        outcome = (result.status, result.run["records"])
        assert outcome == ("SUCCEEDED", PAGES), (result.run["failed_step"], result.run["error"])
        assert result.source["runtime_count"] == 3  # type: ignore[index]
        histories[source_id] = harness.aws("stepfunctions").get_execution_history(
            executionArn=execution["executionArn"], maxResults=1000
        )["events"]
    assert all(len(harness.executions_of(source_id)) == 1 for source_id in sources)

    # And never more runs were under way — from Validate's message to their download's end —
    # than downloads can run at once, so no Download message waited in its queue for a worker
    steps = [step_spans(events) for events in histories.values()]
    runs = [(step["Validate"][0], step["Download"][1]) for step in steps]
    assert most_at_once(runs) <= capacity, runs


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    """The most spans open at one instant (one that ends as another starts is not open)."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most
