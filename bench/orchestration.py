"""What the state machine adds to a run: one with nothing new, through the whole machine,
against the three services' logic called directly in one process.

The two kinds of run alternate — a run through the state machine, then one called directly,
RUNS times after the warm-ups — so that the machine's load, which comes and goes, falls on
both alike; the overhead is the median of each pair's difference. Each run through the state
machine is asked for as `sourceflow run` asks (a Run Requested event), so it also goes through
the scheduler's admission: the time from the request to the execution's start is reported
beside it.
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from bench.common import bench_source, direct_run, task_request, utc_now
from local.stack import LocalStack, aws_client
from ops.runs import find_requested_execution, wait_for_execution
from shared.runtime.catalogue import DetailType
from shared.runtime.events import EventPublisher
from shared.store.db import Database

RUNS = 15
WARM_UPS = 2
STEPS = ("Validate", "Download", "UnlockAfterSuccess", "PublishRunSucceeded")


def measure_orchestration(stack: LocalStack, runs: int = RUNS) -> dict[str, Any]:
    env = stack.env
    db = Database(env["DATABASE_URL"], application_name="sourceflow-bench")
    # The vendor's data ends at its anchor (≤ now): a cursor at now means nothing new.
    source_id = bench_source(db, env["VENDOR_URL"], "listings-a", cursor=utc_now())
    sfn = aws_client(env, "stepfunctions")
    request_run = EventPublisher(aws_client(env, "events"), env["EVENT_BUS_NAME"])
    # The services' logic in this process reaches the stack's AWS as the workers do.
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})

    machine, direct, admission = [], [], []
    steps, direct_steps, transitions = defaultdict(list), defaultdict(list), 0
    for index in range(runs + WARM_UPS):
        requested_at = datetime.now(UTC)
        event_id = request_run(
            DetailType.RUN_REQUESTED, {"source_id": source_id, "requested_by": "bench"}
        )
        arn = find_requested_execution(db, source_id, event_id, waiting=lambda _: None)
        described = wait_for_execution(sfn, arn)
        assert described["status"] == "SUCCEEDED", described
        timings = direct_run(db, task_request(source_id), bucket=env["RAW_BUCKET"])
        if index < WARM_UPS:
            continue  # cold workers, first connections
        machine.append((described["stopDate"] - described["startDate"]).total_seconds())
        admission.append((described["startDate"] - requested_at).total_seconds())
        direct.append(sum(timings.values()))
        events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        transitions = sum(event["type"].endswith("StateEntered") for event in events)
        for step, seconds in step_seconds(events).items():
            steps[step].append(seconds)
        for step, seconds in timings.items():
            direct_steps[step].append(seconds)
    db.close()

    step_medians = {step: statistics.median(values) for step, values in steps.items()}
    overheads = sorted(m - d for m, d in zip(machine, direct, strict=True))
    return {
        "runs": runs,
        "median_state_machine_s": statistics.median(machine),
        "median_direct_s": statistics.median(direct),
        # The median of the paired differences, each state-machine run against the direct run
        # right after it; and their middle half.
        "median_overhead_s": statistics.median(overheads),
        "overhead_quartiles_s": statistics.quantiles(overheads, n=4)[::2],
        # From the Run Requested event being put to the execution's start: the bus, the
        # scheduler's queue and its admission pass, and StartExecution.
        "median_admission_s": statistics.median(admission),
        # Each callback step: from the task's message being sent to the task's success,
        # i.e. SQS delivery + the worker's poll + the logic + SendTaskSuccess.
        "median_step_s": step_medians,
        "median_direct_step_s": {
            step: statistics.median(values) for step, values in direct_steps.items()
        },
        "median_between_steps_s": statistics.median(machine) - sum(step_medians.values()),
        "state_transitions_per_run": transitions,
    }


def step_spans(events: list[dict[str, Any]]) -> dict[str, tuple[datetime, datetime]]:
    """Each callback step's span in the execution history, from its task being scheduled (its
    message sent) to its success."""
    spans, state, scheduled = {}, "", None
    for event in events:
        if event["type"] == "TaskStateEntered":
            state = event["stateEnteredEventDetails"]["name"]
        elif event["type"] == "TaskScheduled":
            scheduled = event["timestamp"]
        elif event["type"] == "TaskSucceeded" and scheduled is not None:
            spans[state] = (scheduled, event["timestamp"])
    return spans


def step_seconds(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds from each step's task being scheduled to its end, from the execution history."""
    return {
        state: (end - start).total_seconds()
        for state, (start, end) in step_spans(events).items()
        if state in STEPS
    }
