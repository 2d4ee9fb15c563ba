"""What the state machine adds to a run: one with nothing new, through the whole machine,
against the three services' logic called directly in one process."""

from __future__ import annotations

import os
import statistics
from collections import defaultdict
from typing import Any

from bench.common import bench_source, direct_run, task_request, utc_now
from local.stack import LocalStack, aws_client
from ops.runs import wait_for_execution
from shared.runtime.executions import start_run
from shared.store.db import Database

RUNS = 15
STEPS = ("Validate", "Download", "UnlockAfterSuccess", "PublishRunSucceeded")


def measure_orchestration(stack: LocalStack, runs: int = RUNS) -> dict[str, Any]:
    env = stack.env
    db = Database(env["DATABASE_URL"], application_name="sourceflow-bench")
    # The vendor's data ends at its anchor (≤ now): a cursor at now means nothing new.
    source_id = bench_source(db, env["VENDOR_URL"], "listings-a", cursor=utc_now())
    sfn = aws_client(env, "stepfunctions")

    machine, steps, transitions = [], defaultdict(list), 0
    for index in range(runs + 2):
        arn = start_run(sfn, env["STATE_MACHINE_ARN"], source_id)
        described = wait_for_execution(sfn, arn)
        assert described["status"] == "SUCCEEDED", described
        if index < 2:
            continue  # warm-up: cold workers, first connections
        machine.append((described["stopDate"] - described["startDate"]).total_seconds())
        events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        transitions = sum(event["type"].endswith("StateEntered") for event in events)
        for step, seconds in step_seconds(events).items():
            steps[step].append(seconds)

    # The services' logic in this process reaches the stack's AWS as the workers do.
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    direct, direct_steps = [], defaultdict(list)
    for index in range(runs + 2):
        timings = direct_run(db, task_request(source_id), bucket=env["RAW_BUCKET"])
        if index >= 2:
            direct.append(sum(timings.values()))
            for step, seconds in timings.items():
                direct_steps[step].append(seconds)
    db.close()

    median_machine, median_direct = statistics.median(machine), statistics.median(direct)
    step_medians = {step: statistics.median(values) for step, values in steps.items()}
    return {
        "runs": runs,
        "median_state_machine_s": median_machine,
        "median_direct_s": median_direct,
        "median_overhead_s": median_machine - median_direct,
        # Each callback step: from the task's message being sent to the task's success,
        # i.e. SQS delivery + the worker's poll + the logic + SendTaskSuccess.
        "median_step_s": step_medians,
        "median_direct_step_s": {
            step: statistics.median(values) for step, values in direct_steps.items()
        },
        "median_between_steps_s": median_machine - sum(step_medians.values()),
        "state_transitions_per_run": transitions,
    }


def step_seconds(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds from each task's scheduling to its end, from the execution history."""
    seconds, state, scheduled = {}, "", None
    for event in events:
        if event["type"] == "TaskStateEntered":
            state = event["stateEnteredEventDetails"]["name"]
        elif event["type"] == "TaskScheduled":
            scheduled = event["timestamp"]
        elif event["type"] == "TaskSucceeded" and scheduled is not None and state in STEPS:
            seconds[state] = (event["timestamp"] - scheduled).total_seconds()
    return seconds
