"""`sourceflow status` asks each part on its own: one that is down is named, with why, beside
what the others say."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import EndpointConnectionError

from infra.resources import SERVICES, Names
from ops.config import OperatorError
from ops.status import pending_approvals, status

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


class FakeSqs:
    def get_queue_url(self, QueueName: str) -> dict[str, str]:
        return {"QueueUrl": f"http://sqs/{QueueName}"}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        depth = 2 if QueueUrl.endswith("-dlq") else 1
        return {"Attributes": {name: str(depth) for name in AttributeNames}}


class FakePages:
    def paginate(self, **_: Any) -> list[dict[str, Any]]:
        return [{"executions": [{"name": "run-1", "startDate": NOW}]}]


class FakeStepFunctions:
    def get_paginator(self, name: str) -> FakePages:
        assert name == "list_executions"
        return FakePages()


class DownClient:
    def __getattr__(self, name: str) -> Any:
        def call(*_: Any, **__: Any) -> Any:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1/")

        return call


class FakeConfig:
    """The operator's configuration, with the clients it hands out and no DATABASE_URL."""

    names = Names("local")

    def __init__(self, **clients: Any) -> None:
        self.clients = clients

    def client(self, service_name: str, *, config: Any = None) -> Any:
        assert config is not None, "status asks each part briefly"
        return self.clients[service_name]

    def require(self, key: str) -> str:
        return f"arn-of-{key}"

    def database_url(self) -> str:
        raise OperatorError("DATABASE_URL is not set (looked in the environment); …")


def test_the_queues_and_executions_show_when_the_database_is_down() -> None:
    config = FakeConfig(sqs=FakeSqs(), stepfunctions=FakeStepFunctions())
    report = status(config, now=NOW)  # type: ignore[arg-type]
    assert [row["service"] for row in report["queues"]] == list(SERVICES)
    assert report["queues"][0] == {
        "service": "validation",
        "queued": 1,
        "in_flight": 1,
        "dead_letters": 2,
    }
    assert report["running"] == [{"execution_name": "run-1", "started": NOW}]
    for key in (
        "waiting_for_admission",
        "locked",
        "scheduler_ticks",
        "pending_approvals",
        "recent_failures",
    ):
        assert report[key] is None
    assert report["unreachable"] == [
        {"part": "the database", "error": "DATABASE_URL is not set (looked in the environment); …"}
    ]


def test_a_part_down_is_named_with_its_error_and_the_others_still_answer() -> None:
    config = FakeConfig(sqs=DownClient(), stepfunctions=FakeStepFunctions())
    report = status(config, now=NOW)  # type: ignore[arg-type]
    assert report["queues"] is None and report["running"]
    [sqs, _] = report["unreachable"]
    assert sqs == {
        "part": "SQS",
        "error": 'Could not connect to the endpoint URL: "http://127.0.0.1:1/"',
    }


def test_what_waits_for_approval_is_listed_oldest_first_with_the_command_that_decides_it() -> None:
    earlier, later = datetime(2026, 11, 27, tzinfo=UTC), NOW
    queries = [
        {
            "execution_name": "src-a-run",
            "source_id": "src-a",
            "requested_by": "alice",
            "requested_at": later,
        }
    ]
    backfills = [
        {"backfill_id": 7, "source_id": "src-b", "requested_by": "bob", "requested_at": earlier}
    ]
    assert [
        (row["what"], row["id"], row["decide_with"])
        for row in pending_approvals(queries, backfills)
    ] == [
        ("backfill", "7", "sourceflow backfill approve|reject 7"),
        ("Re-specs query", "src-a-run", "sourceflow approve|reject src-a-run"),
    ]
