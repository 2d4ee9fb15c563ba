"""Create sourceflow's AWS resources through the service APIs, from the same definitions the
cloud templates use (the emulator runs state machines only when created this way)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from infra import statemachine
from infra.resources import (
    NOTIFICATION_DETAIL_TYPES,
    SCHEDULE_RULES,
    SCHEDULER_COMMAND_DETAIL_TYPES,
    SERVICES,
    TASKS_DETAIL_TYPES,
    Names,
    state_machine_substitutions,
)
from shared.runtime.catalogue import DOWNLOAD_BATCH_SIZE, EVENT_SOURCE, Timeouts

_LOCAL_ROLE_ARN = "arn:aws:iam::123456789012:role/sourceflow-local-state-machine"
BATCH_SIZE = {
    "validation": 10,
    "download": DOWNLOAD_BATCH_SIZE,
    "unlocking": 10,
    "scheduler": 10,
    "tasks": 10,
}
# The services whose workers cut an invocation off at its function timeout, as Lambda does
# (local/worker.py). Download plans its invocations by the time its context says is left, so it
# must meet the same end as in the cloud; validation's and unlocking's local function timeouts
# are tight for a batch of ten on a loaded machine (LOCAL_TIMEOUTS), so theirs only inform.
CUT_OFF_AT_TIMEOUT = frozenset({"download"})


def visibility_timeouts(timeouts: Timeouts) -> dict[str, int]:
    """How long a received message stays hidden before SQS hands it out again, per service.
    Validation's and unlocking's come from the run's timeouts: shorter than their tasks', so that
    a delivery that died after its commit is handed out again while its task still waits. A
    download keeps its message hidden with every heartbeat (see services/download), so its
    queue's value only covers the moments before the first one."""
    return {
        "validation": timeouts.validation_visibility_seconds,
        "download": 60,
        "unlocking": timeouts.unlocking_visibility_seconds,
        "scheduler": 120,
        # A sql task's statement may run up to its timeout (SQL_TASK_STATEMENT_TIMEOUT_MS, by
        # default a minute) before its delivery ends.
        "tasks": 120,
    }


def function_timeouts(timeouts: Timeouts) -> dict[str, int]:
    """The timeout each service's workers give their Lambda context (the worker's
    SOURCEFLOW_FUNCTION_TIMEOUT); only download's cuts a delivery off (CUT_OFF_AT_TIMEOUT)."""
    return {
        **visibility_timeouts(timeouts),
        "validation": timeouts.validation_function_seconds,
        "download": timeouts.download_function_seconds,
        "unlocking": timeouts.unlocking_function_seconds,
    }


@dataclass(frozen=True)
class Provisioned:
    queue_urls: dict[str, str]
    dlq_urls: dict[str, str]
    state_machine_arn: str
    event_bus: str
    raw_bucket: str
    notifications_queue_url: str
    alerts_queue_url: str
    alerts_topic_arn: str
    notifications_topic_arn: str


def provision(clients: Any, names: Names, timeouts: Timeouts) -> Provisioned:
    sqs, s3, events, sfn, sns = clients.sqs, clients.s3, clients.events, clients.sfn, clients.sns
    queue_urls, dlq_urls = {}, {}
    visibility = visibility_timeouts(timeouts)
    for service in SERVICES:
        dlq_urls[service] = sqs.create_queue(
            QueueName=names.dlq(service), Attributes={"MessageRetentionPeriod": "1209600"}
        )["QueueUrl"]
        queue_urls[service] = sqs.create_queue(
            QueueName=names.queue(service),
            Attributes={
                "VisibilityTimeout": str(visibility[service]),
                "RedrivePolicy": json.dumps(
                    {
                        "deadLetterTargetArn": _queue_arn(sqs, dlq_urls[service]),
                        "maxReceiveCount": timeouts.max_receive_count,
                    }
                ),
            },
        )["QueueUrl"]

    s3.create_bucket(Bucket=names.raw_bucket)
    events.create_event_bus(Name=names.event_bus)
    notifications_url = sqs.create_queue(QueueName=names.notifications_queue)["QueueUrl"]
    _route(
        events,
        names.event_bus,
        names.notifications_rule,
        NOTIFICATION_DETAIL_TYPES,
        _queue_arn(sqs, notifications_url),
    )
    scheduler_queue_arn = _queue_arn(sqs, queue_urls["scheduler"])
    _route(
        events,
        names.event_bus,
        names.scheduler_commands_rule,
        SCHEDULER_COMMAND_DETAIL_TYPES,
        scheduler_queue_arn,
    )
    _route(
        events,
        names.event_bus,
        names.tasks_rule,
        TASKS_DETAIL_TYPES,
        _queue_arn(sqs, queue_urls["tasks"]),
    )
    for rule in SCHEDULE_RULES:
        # Schedule rules belong to the default bus; the local stack's ticker fires them.
        events.put_rule(
            Name=names.schedule_rule(rule),
            ScheduleExpression=rule.expression,
            Description=rule.description,
            State="ENABLED",
        )
        events.put_targets(
            Rule=names.schedule_rule(rule),
            Targets=[{"Id": "scheduler", "Arn": scheduler_queue_arn}],
        )

    # People subscribe to the alerts topic (e-mail, chat); locally a queue does, to be read.
    alerts_topic_arn = sns.create_topic(Name=names.alerts_topic)["TopicArn"]
    alerts_url = sqs.create_queue(QueueName=names.alerts_topic)["QueueUrl"]
    sns.subscribe(
        TopicArn=alerts_topic_arn,
        Protocol="sqs",
        Endpoint=_queue_arn(sqs, alerts_url),
        Attributes={"RawMessageDelivery": "true"},
    )

    # A workflow's notify task publishes to the notifications topic; locally the notifications
    # queue reads it too (not raw: the SNS envelope tells a message from the bus's events).
    notifications_topic_arn = sns.create_topic(Name=names.notifications_topic)["TopicArn"]
    sns.subscribe(
        TopicArn=notifications_topic_arn,
        Protocol="sqs",
        Endpoint=_queue_arn(sqs, notifications_url),
    )

    definition = statemachine.render(
        state_machine_substitutions(queue_urls, names.event_bus, alerts_topic_arn, timeouts)
    )
    state_machine_arn = sfn.create_state_machine(
        name=names.state_machine, definition=json.dumps(definition), roleArn=_LOCAL_ROLE_ARN
    )["stateMachineArn"]
    return Provisioned(
        queue_urls,
        dlq_urls,
        state_machine_arn,
        names.event_bus,
        names.raw_bucket,
        notifications_url,
        alerts_url,
        alerts_topic_arn,
        notifications_topic_arn,
    )


def _route(events: Any, bus: str, rule: str, detail_types: tuple[str, ...], target: str) -> None:
    events.put_rule(
        Name=rule,
        EventBusName=bus,
        EventPattern=json.dumps({"source": [EVENT_SOURCE], "detail-type": list(detail_types)}),
    )
    events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "queue", "Arn": target}])


def _queue_arn(sqs: Any, queue_url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])
