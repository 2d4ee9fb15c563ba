"""The AWS resources sourceflow needs, named once for the cloud templates and the local stack."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.runtime.deliveries import RetryPolicy

SERVICES = ("validation", "download", "unlocking", "scheduler")
# Events people and downstream systems watch (an SNS topic in the cloud, a queue locally).
NOTIFICATION_DETAIL_TYPES = (
    "Run Succeeded",
    "Run Failed",
    "Run Cancelled",
    "Approval Requested",
    "Flow Reset Applied",
)
# Events the scheduler consumes from the bus.
SCHEDULER_COMMAND_DETAIL_TYPES = ("Run Requested", "Flow Reset Requested")


@dataclass(frozen=True)
class ScheduleRule:
    name: str
    expression: str  # EventBridge: rate(...) or cron(...)
    description: str


# On every tick the scheduler starts the due sources' runs and asks for the resets of special
# flows that have done their job. Schedule rules live on the default bus (EventBridge's rule).
SCHEDULE_RULES = (
    ScheduleRule(
        "tick", "rate(1 minute)", "start due runs; reset special flows that have done their job"
    ),
)


@dataclass(frozen=True)
class Timeouts:
    """Task timeouts of the state machine, how validation's and unlocking's messages are
    redelivered inside them, and the lease that must outlast a whole run."""

    validate_seconds: int = 240
    download_seconds: int = 3600
    download_heartbeat_seconds: int = 120
    unlock_seconds: int = 600
    # SQS redelivery bounds: receives before the DLQ, and the first backoff step.
    max_receive_count: int = 5
    retry_backoff_seconds: float = 2.0
    # Validation's and unlocking's function timeouts and their queues' visibility timeouts. A
    # delivery that dies without answering (after its commit, say) is handed out again after
    # the visibility timeout, which must come while the task still waits: every delivery the
    # queue allows fits inside the task's timeout (`redelivery_seconds`). AWS requires the
    # visibility to be at least the function's timeout; it is a little more, so that a delivery
    # cut off at its timeout is over before its message comes back. Unlocking's function
    # outlasts the Re-specs statement timeout (60 s) its transaction may use up.
    validation_function_seconds: int = 30
    validation_visibility_seconds: int = 45
    unlocking_function_seconds: int = 90
    unlocking_visibility_seconds: int = 120
    # How often the download service heartbeats (well inside download_heartbeat_seconds).
    heartbeat_interval_seconds: float = 20.0
    lock_lease_seconds: int = 900
    # How long a run waits for a person to approve its Re-specs query (Approve task).
    approval_seconds: int = 86_400

    @property
    def download_claim_seconds(self) -> int:
        """A download delivery's claim (and its message's visibility) outlives three missed
        heartbeats, then lapses so the message's next delivery can take over."""
        return max(2, math.ceil(3 * self.heartbeat_interval_seconds))

    def redelivery_seconds(self, *, function_seconds: int, visibility_seconds: int) -> int:
        """The longest a task message's deliveries can take, from the first until the last one
        the queue allows has answered: each delivery before the last dies without answering
        (its message comes back after the visibility timeout) or fails at its function timeout
        (and comes back after its retry backoff); the last one reports within its function
        timeout, by name if it fails."""
        retry = self._retry_policy()
        held = (
            max(visibility_seconds, function_seconds + retry.backoff_seconds(receive))
            for receive in range(1, self.max_receive_count)
        )
        return sum(held) + function_seconds

    @property
    def download_takeover_seconds(self) -> int:
        """The longest from a dead download delivery's last heartbeat until its message's next
        delivery heartbeats: the message comes back as the claim lapses (every heartbeat keeps
        both alive for download_claim_seconds), and a delivery that still finds the claim live
        is handed out again after its retry backoff. So download needs no visibility timeout
        shorter than its task's: its heartbeats set it."""
        last_backoff = self._retry_policy().backoff_seconds(self.max_receive_count - 1)
        return self.download_claim_seconds + last_backoff

    def delivery_problems(self) -> list[str]:
        """What breaks "a step that committed is never reported as failed": a validation or
        unlocking message whose delivery died after its commit must come back, and every
        delivery the queue allows answer, while its task still waits; a dead download's message
        must be taken over before its task's heartbeat times out."""
        problems = []
        if self.max_receive_count < 3:
            problems.append(f"max_receive_count {self.max_receive_count}: under two redeliveries")
        steps = {
            "Validate": (
                self.validate_seconds,
                self.validation_function_seconds,
                self.validation_visibility_seconds,
            ),
            "Unlock": (
                self.unlock_seconds,
                self.unlocking_function_seconds,
                self.unlocking_visibility_seconds,
            ),
        }
        for step, (task, function, visibility) in steps.items():
            if visibility < function:
                problems.append(
                    f"{step}: its queue's visibility timeout ({visibility} s) is shorter than "
                    f"its function's timeout ({function} s), which AWS refuses"
                )
            redelivery = self.redelivery_seconds(
                function_seconds=function, visibility_seconds=visibility
            )
            if redelivery > task:
                problems.append(
                    f"{step}: the deliveries its queue allows may take {redelivery} s, longer "
                    f"than the task's timeout ({task} s)"
                )
        if self.download_takeover_seconds >= self.download_heartbeat_seconds:
            problems.append(
                f"Download: a dead delivery's message may be taken over only after "
                f"{self.download_takeover_seconds} s, past the task's heartbeat timeout "
                f"({self.download_heartbeat_seconds} s)"
            )
        return problems

    def _retry_policy(self) -> RetryPolicy:
        # Imported here: its module brings the Lambda runtime (powertools), which the operator's
        # command does not otherwise load.
        from shared.runtime.deliveries import RetryPolicy

        return RetryPolicy(self.max_receive_count, self.retry_backoff_seconds)


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
    def alerts_topic(self) -> str:
        return f"{self.prefix}-alerts"

    @property
    def notifications_rule(self) -> str:
        return f"{self.prefix}-notifications"

    @property
    def notifications_queue(self) -> str:
        return f"{self.prefix}-notifications"

    @property
    def notifications_topic(self) -> str:
        return f"{self.prefix}-notifications"

    @property
    def scheduler_commands_rule(self) -> str:
        return f"{self.prefix}-scheduler-commands"

    def schedule_rule(self, rule: ScheduleRule) -> str:
        return f"{self.prefix}-{rule.name}"

    @property
    def raw_bucket(self) -> str:
        """Locally; bucket names are global, so the cloud's adds the account and region."""
        return f"{self.prefix}-raw"

    def stack(self, part: str) -> str:
        """A CloudFormation stack: `core`, `workflow`, or a service's name."""
        return f"{self.prefix}-{part}"

    def parameter(self, stack_part: str, key: str) -> str:
        """An SSM parameter one stack publishes for the others, e.g. download's queue-url."""
        return f"/sourceflow/{self.stage}/{stack_part}/{key}"


def state_machine_substitutions(
    queue_urls: dict[str, str], event_bus: str, alerts_topic_arn: str, timeouts: Timeouts
) -> dict[str, str | int]:
    return {
        "AlertsTopicArn": alerts_topic_arn,
        "ValidationQueueUrl": queue_urls["validation"],
        "DownloadQueueUrl": queue_urls["download"],
        "UnlockingQueueUrl": queue_urls["unlocking"],
        "EventBusName": event_bus,
        "ValidateTimeoutSeconds": timeouts.validate_seconds,
        "DownloadTimeoutSeconds": timeouts.download_seconds,
        "DownloadHeartbeatSeconds": timeouts.download_heartbeat_seconds,
        "UnlockTimeoutSeconds": timeouts.unlock_seconds,
        "ApprovalTimeoutSeconds": timeouts.approval_seconds,
    }
