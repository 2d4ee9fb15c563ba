"""The AWS resources sourceflow needs, named once for the cloud templates and the local stack."""

from __future__ import annotations

from dataclasses import dataclass

from shared.runtime.catalogue import RUN_ENDS, RUNS_MAY_START_AFTER, DetailType, Timeouts

# `tasks` does the tasks of workflows after ingestion (issue 21) for their own state machines.
SERVICES = ("validation", "download", "unlocking", "scheduler", "tasks")
# In the cloud every function and the state machine publish a version on each deploy and are
# invoked through this alias (the templates' AutoPublishAlias), which a deployment moves to
# the new version gradually and back on an alarm; runs start through the state machine's.
LIVE_ALIAS = "live"
# The operator's web console and HTTP API (console/): a deployable of its own beside the
# services (infra/templates/console.yaml), but no service: no queue, no task of the state
# machine; people call it through API Gateway.
CONSOLE = "console"
# Events people and downstream systems watch (an SNS topic in the cloud, a queue locally).
NOTIFICATION_DETAIL_TYPES = (
    DetailType.RUN_SUCCEEDED,
    DetailType.RUN_FAILED,
    DetailType.RUN_CANCELLED,
    DetailType.APPROVAL_REQUESTED,
    DetailType.FLOW_RESET_APPLIED,
    DetailType.SOURCE_OVERDUE,
    DetailType.SOURCE_RECOVERED,
    DetailType.WORKFLOW_RUN_SUCCEEDED,
    DetailType.WORKFLOW_RUN_FAILED,
)
# Events the scheduler consumes from the bus: run requests and run ends (admission), resets.
SCHEDULER_COMMAND_DETAIL_TYPES = (*RUNS_MAY_START_AFTER, DetailType.FLOW_RESET_REQUESTED)
# Events the tasks service consumes: a run's end answers the workflow task waiting for it.
TASKS_DETAIL_TYPES = RUN_ENDS


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
class Names:
    stage: str

    @property
    def prefix(self) -> str:
        return f"sourceflow-{self.stage}"

    def queue(self, service: str) -> str:
        return f"{self.prefix}-{service}"

    def dlq(self, service: str) -> str:
        return f"{self.prefix}-{service}-dlq"

    def function(self, service: str) -> str:
        return f"{self.prefix}-{service}"

    def log_group(self, service: str) -> str:
        """The service function's CloudWatch Logs group (service.yaml's FunctionLogGroup)."""
        return f"/aws/lambda/{self.function(service)}"

    @property
    def state_machine(self) -> str:
        return f"{self.prefix}-run"

    def workflow_state_machine(self, workflow: str, version: int | None = None) -> str:
        """A workflow's state machine, whose versions are published versions of it; or, given
        a version, that version's own machine (README, "Workflows after ingestion"). A
        workflow's name has at most 40 characters, so either fits Step Functions' 80."""
        machine = f"{self.prefix}-wf-{workflow}"
        return machine if version is None else f"{machine}-v{version}"

    def state_machine_alias_arn(self, region: str, account: str, partition: str = "aws") -> str:
        """The cloud's state machine's live alias, which every run starts through."""
        arn = f"arn:{partition}:states:{region}:{account}:stateMachine:{self.state_machine}"
        return f"{arn}:{LIVE_ALIAS}"

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

    @property
    def tasks_rule(self) -> str:
        """Run ends to the tasks queue (TASKS_DETAIL_TYPES)."""
        return f"{self.prefix}-tasks-run-ends"

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
        "MaxDownloadContinuations": timeouts.max_download_continuations,
    }
