"""The local ticker: reading schedule rules from EventBridge and delivering their Scheduled
Events to SQS queues the way EventBridge would."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from local.ticker import ScheduledRule, fire, fire_all, scheduled_rules
from shared.rules.schedules import parse_rule_expression

PREFIX = "sourceflow-"
ACCOUNT, REGION = "123456789012", "eu-west-1"
QUEUE_OWNER = "210987654321"
AT = datetime(2026, 11, 22, 19, 15, 0, 123456, tzinfo=UTC)


# --- factories and fakes ----------------------------------------------------------------------


def rule_arn(name: str) -> str:
    return f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}"


def queue_arn(name: str, owner: str = QUEUE_OWNER) -> str:
    return f"arn:aws:sqs:{REGION}:{owner}:{name}"


def lambda_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def rule(
    name: str,
    *,
    expression: str | None = "rate(15 minutes)",
    state: str = "ENABLED",
    targets: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A rule as `list_rules` lists it, with the target ARNs `list_targets_by_rule` gives."""
    listed: dict[str, Any] = {"Name": name, "Arn": rule_arn(name), "State": state}
    if expression is not None:
        listed["ScheduleExpression"] = expression
    else:
        listed["EventPattern"] = json.dumps({"source": ["sourceflow"]})
    listed["_targets"] = targets
    return listed


class FakeEvents:
    """EventBridge's rule listing, over rules given up front."""

    def __init__(self, *rules: dict[str, Any]) -> None:
        self._rules = rules
        self.prefixes: list[str] = []

    def list_rules(self, *, NamePrefix: str) -> dict[str, Any]:
        self.prefixes.append(NamePrefix)
        return {
            "Rules": [
                {key: value for key, value in r.items() if key != "_targets"}
                for r in self._rules
                if r["Name"].startswith(NamePrefix)
            ]
        }

    def list_targets_by_rule(self, *, Rule: str) -> dict[str, Any]:
        (found,) = [r for r in self._rules if r["Name"] == Rule]
        return {"Targets": [{"Id": f"t{i}", "Arn": arn} for i, arn in enumerate(found["_targets"])]}

    def get_paginator(self, operation: str) -> Any:
        """boto3's paginators; here every listing fits on one page."""
        listing = getattr(self, operation)

        class OnePage:
            def paginate(self, **kwargs: Any) -> list[dict[str, Any]]:
                return [listing(**kwargs)]

        return OnePage()


class FakeSqs:
    """Queue URLs by name and owner, and every message sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.lookups: list[tuple[str, str]] = []

    @staticmethod
    def url_of(name: str, owner: str = QUEUE_OWNER) -> str:
        return f"https://sqs.{REGION}.local/{owner}/{name}"

    def get_queue_url(self, *, QueueName: str, QueueOwnerAWSAccountId: str) -> dict[str, str]:
        self.lookups.append((QueueName, QueueOwnerAWSAccountId))
        return {"QueueUrl": self.url_of(QueueName, QueueOwnerAWSAccountId)}

    def send_message(self, *, QueueUrl: str, MessageBody: str) -> dict[str, str]:
        self.sent.append((QueueUrl, json.loads(MessageBody)))
        return {"MessageId": str(len(self.sent))}

    def bodies_to(self, url: str) -> list[dict[str, Any]]:
        return [message for to, message in self.sent if to == url]


def scheduled(name: str, *queues: str) -> ScheduledRule:
    return ScheduledRule(
        name, rule_arn(name), parse_rule_expression("rate(15 minutes)"), tuple(queues)
    )


# --- scheduled_rules --------------------------------------------------------------------------


def test_only_enabled_schedule_rules_are_kept() -> None:
    # Given an enabled schedule rule, a disabled one and an event-pattern rule
    events = FakeEvents(
        rule("sourceflow-tick", targets=(queue_arn("scheduler"),)),
        rule("sourceflow-paused", state="DISABLED", targets=(queue_arn("scheduler"),)),
        rule("sourceflow-on-run", expression=None, targets=(queue_arn("notify"),)),
    )
    # When the schedule rules are read
    rules = scheduled_rules(events, PREFIX)
    # Then only the enabled schedule is kept, with its parsed schedule
    assert [r.name for r in rules] == ["sourceflow-tick"]
    assert rules[0].arn == rule_arn("sourceflow-tick")
    assert rules[0].schedule == parse_rule_expression("rate(15 minutes)")
    assert events.prefixes == [PREFIX]


def test_only_sqs_targets_are_kept() -> None:
    events = FakeEvents(
        rule(
            "sourceflow-tick",
            expression="cron(0/5 * * * ? *)",
            targets=(queue_arn("scheduler"), lambda_arn("scheduler"), queue_arn("audit")),
        )
    )
    (found,) = scheduled_rules(events, PREFIX)
    assert found.target_queue_arns == (queue_arn("scheduler"), queue_arn("audit"))


def test_rules_outside_the_prefix_are_not_read() -> None:
    events = FakeEvents(
        rule("sourceflow-tick", targets=(queue_arn("scheduler"),)),
        rule("other-app-tick", targets=(queue_arn("other"),)),
    )
    assert [r.name for r in scheduled_rules(events, PREFIX)] == ["sourceflow-tick"]


# --- fire -------------------------------------------------------------------------------------


def test_fire_sends_one_scheduled_event_per_target_queue() -> None:
    # Given a rule with two queues
    sqs = FakeSqs()
    tick = scheduled("sourceflow-tick", queue_arn("scheduler"), queue_arn("audit"))
    # When it fires
    fire(tick, sqs, AT)
    # Then each queue, looked up by name and owner, gets one message
    assert sqs.lookups == [("scheduler", QUEUE_OWNER), ("audit", QUEUE_OWNER)]
    assert [to for to, _ in sqs.sent] == [FakeSqs.url_of("scheduler"), FakeSqs.url_of("audit")]


def test_the_message_is_the_envelope_eventbridge_would_deliver() -> None:
    sqs = FakeSqs()
    fire(scheduled("sourceflow-tick", queue_arn("scheduler")), sqs, AT)
    (message,) = sqs.bodies_to(FakeSqs.url_of("scheduler"))
    assert message["version"] == "0"
    assert message["detail-type"] == "Scheduled Event"
    assert message["source"] == "aws.events"
    assert message["account"] == ACCOUNT
    assert message["region"] == REGION
    assert message["resources"] == [rule_arn("sourceflow-tick")]
    assert message["time"] == "2026-11-22T19:15:00Z"
    assert message["detail"] == {}
    uuid.UUID(message["id"])


def test_the_time_is_rendered_in_utc_whatever_zone_it_is_given_in() -> None:
    sqs = FakeSqs()
    in_new_york = AT.astimezone(timezone(timedelta(hours=-5)))
    fire(scheduled("sourceflow-tick", queue_arn("scheduler")), sqs, in_new_york)
    assert sqs.sent[0][1]["time"] == "2026-11-22T19:15:00Z"


def test_every_fire_has_a_fresh_id_shared_by_its_queues() -> None:
    sqs = FakeSqs()
    tick = scheduled("sourceflow-tick", queue_arn("scheduler"), queue_arn("audit"))
    fire(tick, sqs, AT)
    fire(tick, sqs, AT)
    ids = [message["id"] for _, message in sqs.sent]
    assert ids[0] == ids[1]
    assert ids[2] == ids[3]
    assert ids[0] != ids[2]


def test_a_rule_without_queues_sends_nothing() -> None:
    sqs = FakeSqs()
    fire(scheduled("sourceflow-tick"), sqs, AT)
    assert sqs.sent == []


# --- fire_all ---------------------------------------------------------------------------------


def test_fire_all_fires_each_schedule_rule_once_and_names_them() -> None:
    # Given two schedule rules and a disabled one
    events = FakeEvents(
        rule("sourceflow-tick", targets=(queue_arn("scheduler"),)),
        rule("sourceflow-nightly", expression="cron(0 2 * * ? *)", targets=(queue_arn("nightly"),)),
        rule("sourceflow-paused", state="DISABLED", targets=(queue_arn("paused"),)),
    )
    sqs = FakeSqs()
    # When all are fired at one moment
    fired = fire_all(events, sqs, PREFIX, AT)
    # Then each enabled rule delivered one event timed at that moment
    assert fired == ["sourceflow-tick", "sourceflow-nightly"]
    assert [to for to, _ in sqs.sent] == [FakeSqs.url_of("scheduler"), FakeSqs.url_of("nightly")]
    assert [message["resources"] for _, message in sqs.sent] == [
        [rule_arn("sourceflow-tick")],
        [rule_arn("sourceflow-nightly")],
    ]
    assert {message["time"] for _, message in sqs.sent} == {"2026-11-22T19:15:00Z"}


def test_fire_all_without_a_moment_uses_now() -> None:
    events = FakeEvents(rule("sourceflow-tick", targets=(queue_arn("scheduler"),)))
    sqs = FakeSqs()
    before = datetime.now(UTC).replace(microsecond=0)
    fire_all(events, sqs, PREFIX)
    after = datetime.now(UTC)
    sent_at = datetime.fromisoformat(sqs.sent[0][1]["time"].replace("Z", "+00:00"))
    assert before <= sent_at <= after


def test_fire_all_with_no_rules_fires_nothing() -> None:
    sqs = FakeSqs()
    assert fire_all(FakeEvents(), sqs, PREFIX, AT) == []
    assert sqs.sent == []
