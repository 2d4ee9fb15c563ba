"""What a run costs on AWS, from the figures the benchmark measured and list prices.

Prices: us-east-1 list prices (USD) as published for Step Functions Standard, Lambda (x86),
SQS standard, S3 Standard PUT, EventBridge custom events. They change; the model is what
matters: each line says what it counts.
"""

from __future__ import annotations

import math
from typing import Any

from infra import templates
from shared.runtime.catalogue import CLOUD_TIMEOUTS

PRICE = {
    "state_transition": 0.025 / 1000,
    "lambda_gb_second": 0.0000166667,
    "lambda_request": 0.20 / 1_000_000,
    "sqs_request": 0.40 / 1_000_000,
    "s3_put": 0.005 / 1000,
    "eventbridge_event": 1.00 / 1_000_000,
}
# Each step's function, sized as service.yaml deploys it.
STEP_SERVICES = {
    "Validate": "validation",
    "Download": "download",
    "UnlockAfterSuccess": "unlocking",
}
_SIZING = templates.load("service")["Mappings"]["Sizing"]
MEMORY_GB = {step: _SIZING[service]["MemorySize"] / 1024 for step, service in STEP_SERVICES.items()}
HEARTBEAT_INTERVAL_S = CLOUD_TIMEOUTS.heartbeat_interval_seconds  # the download's, in the cloud
# Per callback step: one send (the state machine), one receive, one delete (the event source
# mapping); the download adds one visibility change per heartbeat (with its lease renewal), and
# one at the start of each invocation.
SQS_REQUESTS_PER_STEP = 3
# What continuing a download in a new task adds (README, "Downloads longer than one
# invocation"): the ContinueDownload, Download and MoreToDownload states.
TRANSITIONS_PER_CONTINUATION = 3
# The run's end event also reaches the scheduler (admission): EventBridge's send to its queue, a
# receive and a delete, and an invocation — at most one per run, as the scheduler takes batches
# of ten. Its pass (a few queries, milliseconds) is left out of the GB-seconds.
ADMISSION_SQS_REQUESTS, ADMISSION_LAMBDA_REQUESTS = 3, 1


def run_cost(
    *, transitions: int, step_seconds: dict[str, float], parts: int, continuations: int = 0
) -> dict[str, Any]:
    """The cost of one run, by line; its download continued `continuations` times (each a
    Download task of its own, and a part cut short where the invocation stopped)."""
    gb_seconds = sum(MEMORY_GB[step] * seconds for step, seconds in step_seconds.items())
    heartbeats = 1 + math.floor(step_seconds.get("Download", 0.0) / HEARTBEAT_INTERVAL_S)
    invocations = len(step_seconds) + continuations + ADMISSION_LAMBDA_REQUESTS
    downloads = 1 + continuations if "Download" in step_seconds else 0
    sqs = (
        SQS_REQUESTS_PER_STEP * (len(step_seconds) + continuations)
        + heartbeats
        + downloads
        + ADMISSION_SQS_REQUESTS
    )
    transitions += TRANSITIONS_PER_CONTINUATION * continuations
    puts = parts + continuations + 1  # the parts, those cut short, and the manifest
    lines = {
        "state_transitions": transitions * PRICE["state_transition"],
        "lambda_gb_seconds": gb_seconds * PRICE["lambda_gb_second"],
        "lambda_requests": invocations * PRICE["lambda_request"],
        "sqs_requests": sqs * PRICE["sqs_request"],
        "s3_puts": puts * PRICE["s3_put"],
        "eventbridge_events": PRICE["eventbridge_event"],  # Run Succeeded
    }
    return {
        "usd": sum(lines.values()),
        "usd_by_line": lines,
        "counted": {
            "state_transitions": transitions,
            "lambda_gb_seconds": round(gb_seconds, 3),
            "lambda_requests": invocations,
            "sqs_requests": sqs,
            "s3_puts": puts,
        },
    }
