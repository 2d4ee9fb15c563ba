"""The AWS resources sourceflow needs, named once for the cloud templates and the local stack."""

from __future__ import annotations

from dataclasses import dataclass

SERVICES = ("validation", "download", "unlocking")
EVENT_SOURCE = "sourceflow"
RUN_OUTCOME_DETAIL_TYPES = ("Run Succeeded", "Run Failed")


@dataclass(frozen=True)
class Timeouts:
    """Task timeouts of the state machine, and the lease that must outlast a whole run."""

    validate_seconds: int = 120
    download_seconds: int = 3600
    download_heartbeat_seconds: int = 120
    unlock_seconds: int = 120
    # SQS redelivery bounds: receives before the DLQ, and the first backoff step.
    max_receive_count: int = 5
    retry_backoff_seconds: float = 2.0
    # How often the download service heartbeats (well inside download_heartbeat_seconds).
    heartbeat_interval_seconds: float = 20.0
    lock_lease_seconds: int = 900


@dataclass(frozen=True)
class Names:
    stage: str

    @property
    def prefix(self) -> str:
        return f"sourceflow-{self.stage}"

    def queue(self, service: str) -> str:
        return f"{self.prefix}-{service}"

    def dlq(self, service: str) -> str:
        return f"{self.prefix}-{service}-dlq"

    @property
    def state_machine(self) -> str:
        return f"{self.prefix}-run"

    @property
    def event_bus(self) -> str:
        return self.prefix

    @property
    def run_outcomes_rule(self) -> str:
        return f"{self.prefix}-run-outcomes"

    @property
    def run_outcomes_queue(self) -> str:
        return f"{self.prefix}-run-outcomes"

    @property
    def raw_bucket(self) -> str:
        return f"{self.prefix}-raw"


def state_machine_substitutions(
    queue_urls: dict[str, str], event_bus: str, timeouts: Timeouts
) -> dict[str, str | int]:
    return {
        "ValidationQueueUrl": queue_urls["validation"],
        "DownloadQueueUrl": queue_urls["download"],
        "UnlockingQueueUrl": queue_urls["unlocking"],
        "EventBusName": event_bus,
        "ValidateTimeoutSeconds": timeouts.validate_seconds,
        "DownloadTimeoutSeconds": timeouts.download_seconds,
        "DownloadHeartbeatSeconds": timeouts.download_heartbeat_seconds,
        "UnlockTimeoutSeconds": timeouts.unlock_seconds,
    }
