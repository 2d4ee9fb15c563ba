"""`sourceflow dlq replay --dry-run` says which dead letters their consumer would refuse again,
judged as the consumer judges them (shared.runtime.contracts, shared.runtime.events)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ops.config import OperatorError
from ops.dlq import DeadLetter, refusal, resolve_service, task_messages
from shared.runtime.contracts import CONTRACTS_DIR

EXAMPLES = CONTRACTS_DIR / "examples"


def example(name: str) -> dict[str, Any]:
    path: Path = sorted((EXAMPLES / f"{name}.v1" / "valid").glob("*.json"))[0]
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def letter(service: str, body: Any) -> DeadLetter:
    return DeadLetter(
        service=service,
        message_id="m-1",
        receipt_handle="r-1",
        body=body if isinstance(body, str) else json.dumps(body),
        message_attributes={},
        sent_at=datetime(2026, 11, 28, tzinfo=UTC),
        receive_count=4,
        error=None,
    )


def event(detail_type: str, detail: dict[str, Any], source: str = "sourceflow") -> dict[str, Any]:
    return {"id": "e-1", "detail-type": detail_type, "source": source, "detail": detail}


def test_each_task_queue_takes_what_the_state_machine_sends_it() -> None:
    assert task_messages() == {
        "validation": ("validation-request", "approval-request"),
        "download": ("download-request",),
        "unlocking": ("unlocking-request",),
    }


@pytest.mark.parametrize(
    ("service", "contract"),
    [
        ("validation", "validation-request"),
        ("validation", "approval-request"),
        ("download", "download-request"),
        ("unlocking", "unlocking-request"),
    ],
)
def test_a_body_its_consumer_takes_would_not_fail_again(service: str, contract: str) -> None:
    assert refusal(letter(service, example(contract))) is None


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("{this is not json", "download-request message is not JSON"),
        ([1, 2], "is not a JSON object"),
        ({**example("download-request"), "schema": "nope"}, "but its schema is 'nope'"),
        ({**example("download-request"), "version": 99}, "version 99, which has no schema"),
        ({**example("download-request"), "source_id": 7}, "$.source_id"),
        (example("unlocking-request"), "but its schema is 'unlocking-request'"),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "unknown-schema",
        "unknown-version",
        "invalid",
        "other-queue",
    ],
)
def test_a_body_its_consumer_refuses_is_said_so_in_the_consumers_words(
    body: Any, said: str
) -> None:
    problem = refusal(letter("download", body))
    assert problem is not None and said in problem


def test_the_schedulers_events_are_judged_as_its_consumer_judges_them() -> None:
    requested = example("run-requested")
    assert refusal(letter("scheduler", event("Run Requested", requested))) is None
    assert refusal(letter("scheduler", event("Scheduled Event", {}, "aws.events"))) is None
    refused = {
        "not an EventBridge event": {"schema": "run-requested"},
        "does not take 'Approval Requested'": event(
            "Approval Requested", example("approval-requested")
        ),
        "$.source_id": event("Run Requested", {**requested, "source_id": None}),
    }
    for said, body in refused.items():
        problem = refusal(letter("scheduler", body))
        assert problem is not None and said in problem, (said, problem)


def test_an_unknown_queue_is_named_with_the_known_ones() -> None:
    assert resolve_service("sourceflow-local-download-dlq") == "download"
    with pytest.raises(OperatorError, match="unknown queue 'downlaod'; the queues are validation"):
        resolve_service("downlaod")
