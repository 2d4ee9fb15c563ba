"""sourceflow's EventBridge events: consuming envelopes from SQS, publishing under contracts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from services.scheduler.domain import requested_run
from shared.errors import ContractViolation, TransientError
from shared.runtime import contracts
from shared.runtime.events import (
    DETAIL_CONTRACTS,
    EVENT_SOURCE,
    SCHEDULED_EVENT,
    EventPublisher,
    parse_event,
)
from shared.runtime.executions import execution_name, requested_run_nonce
from shared.timefmt import isoformat
from tests.fakes import client_error

BUS = "sourceflow-bus"
SCHEDULER_TAKES = {SCHEDULED_EVENT, "Run Requested", "Flow Reset Requested"}
RUN_ARN = "arn:aws:states:us-east-1:123456789012:execution:sourceflow:src-1-20261122T1800-sched"


# --- factories --------------------------------------------------------------------------------


def run_requested_detail(**overrides: Any) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "schema": "run-requested",
        "version": 1,
        "correlation_id": "op-1",
        "produced_at": "2026-11-22T18:41:57.126486Z",
        "source_id": "src-1",
        "requested_by": "jdoe",
        "reason": "vendor fixed the 503s",
    }
    detail.update(overrides)
    return {key: value for key, value in detail.items() if value is not None}


def envelope(
    detail_type: str = "Run Requested",
    *,
    source: str = EVENT_SOURCE,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "0d9f7b5e-1c2a-4b7e-9a51-3e6f2c4d8a10",
        "detail-type": detail_type,
        "source": source,
        "account": "123456789012",
        "time": "2026-11-22T18:41:57Z",
        "region": "us-east-1",
        "resources": [],
        "detail": run_requested_detail() if detail is None else detail,
    }


def scheduled_envelope(*, source: str = "aws.events") -> dict[str, Any]:
    event = envelope(SCHEDULED_EVENT, source=source, detail={})
    event["resources"] = ["arn:aws:events:us-east-1:123456789012:rule/sourceflow-tick"]
    return event


def body(event: Any) -> str:
    return json.dumps(event)


class FakeEvents:
    """An EventBridge client that records put_events and answers as it is told."""

    def __init__(self, *, failed_entry_count: int = 0, error: Exception | None = None) -> None:
        self.put: list[list[dict[str, Any]]] = []
        self._failed, self._error = failed_entry_count, error

    def put_events(self, *, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.put.append(Entries)
        if self._error is not None:
            raise self._error
        results: list[dict[str, Any]] = [{"EventId": f"e-{i}"} for i in range(len(Entries))]
        if self._failed:
            results = [{"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}]
        return {"FailedEntryCount": self._failed, "Entries": results}

    @property
    def only_entry(self) -> dict[str, Any]:
        assert len(self.put) == 1, f"expected one put_events call, got {len(self.put)}"
        (entry,) = self.put[0]
        return entry


# --- parse_event ------------------------------------------------------------------------------


def test_a_valid_sourceflow_event_is_returned_as_its_envelope() -> None:
    event = envelope()
    assert parse_event(body(event), SCHEDULER_TAKES) == event


def test_a_scheduled_event_from_aws_events_is_returned_as_its_envelope() -> None:
    event = scheduled_envelope()
    assert parse_event(body(event), SCHEDULER_TAKES) == event


@pytest.mark.parametrize("text", ["", "not json", "{'single': 'quotes'}", '{"detail-type": '])
def test_a_body_that_is_not_json_is_a_contract_violation(text: str) -> None:
    with pytest.raises(ContractViolation, match="not JSON"):
        parse_event(text, SCHEDULER_TAKES)


@pytest.mark.parametrize(
    "event",
    [
        {key: value for key, value in envelope().items() if key != "detail-type"},
        {key: value for key, value in envelope().items() if key != "detail"},
        [envelope()],
        "Run Requested",
    ],
)
def test_a_message_that_is_not_an_eventbridge_event_is_a_contract_violation(event: Any) -> None:
    with pytest.raises(ContractViolation, match="not an EventBridge event"):
        parse_event(body(event), SCHEDULER_TAKES)


def test_a_detail_type_the_consumer_does_not_take_is_named_with_the_accepted_ones() -> None:
    # Given a consumer of schedule ticks and run requests only
    accepted = {SCHEDULED_EVENT, "Run Requested"}
    # When a Run Succeeded event reaches it
    with pytest.raises(ContractViolation) as caught:
        parse_event(body(envelope("Run Succeeded")), accepted)
    # Then the error names what came and what it takes
    message = str(caught.value)
    assert "'Run Succeeded'" in message
    assert "'Run Requested'" in message
    assert "'Scheduled Event'" in message


@pytest.mark.parametrize("source", ["sourceflow", "aws.s3", None])
def test_a_scheduled_event_must_come_from_aws_events(source: str | None) -> None:
    event = scheduled_envelope()
    event["source"] = source
    with pytest.raises(ContractViolation, match=r"aws\.events"):
        parse_event(body(event), SCHEDULER_TAKES)


@pytest.mark.parametrize("source", ["aws.events", "acme.sourceflow", None])
def test_a_sourceflow_event_from_another_source_is_a_contract_violation(
    source: str | None,
) -> None:
    event = envelope()
    event["source"] = source
    with pytest.raises(ContractViolation) as caught:
        parse_event(body(event), SCHEDULER_TAKES)
    assert "'Run Requested'" in str(caught.value)
    assert "'sourceflow'" in str(caught.value)


@pytest.mark.parametrize(
    ("detail", "field"),
    [
        (run_requested_detail(requested_by=None), "requested_by"),
        (run_requested_detail(source_id=None), "source_id"),
        (run_requested_detail(produced_at="yesterday"), "produced_at"),
        (run_requested_detail(priority="high"), "priority"),
        ({}, "source_id"),
    ],
)
def test_a_run_requested_detail_that_breaks_its_contract_names_it(
    detail: dict[str, Any], field: str
) -> None:
    with pytest.raises(ContractViolation) as caught:
        parse_event(body(envelope(detail=detail)), SCHEDULER_TAKES)
    assert "run-requested" in str(caught.value)
    assert field in str(caught.value)


def test_a_flow_reset_requested_detail_is_checked_against_its_own_contract() -> None:
    # Given a succeeded-flow reset request without the run that justifies it
    detail = {
        "schema": "flow-reset-requested",
        "version": 1,
        "correlation_id": "src-1-flow-reset-requested",
        "produced_at": "2026-11-22T19:00:00Z",
        "source_id": "src-1",
        "expected_params": {"type": "Full Load"},
        "cause": "special_flow_succeeded",
        "decided_at": "2026-11-22T19:00:00Z",
    }
    event = envelope("Flow Reset Requested", detail=detail)
    with pytest.raises(ContractViolation, match=r"flow-reset-requested.*evidence_execution_arn"):
        parse_event(body(event), SCHEDULER_TAKES)
    # And with it, the same event is accepted
    event["detail"]["evidence_execution_arn"] = RUN_ARN
    assert parse_event(body(event), SCHEDULER_TAKES) == event


# --- EventPublisher ---------------------------------------------------------------------------


def test_an_event_is_put_once_on_the_bus_with_a_contract_valid_detail() -> None:
    # Given a publisher on a fake bus
    events = FakeEvents()
    publish = EventPublisher(events, BUS)
    # When a run request is published
    publish("Run Requested", {"source_id": "src-1", "requested_by": "jdoe"})
    # Then one entry goes to the named bus, from sourceflow, with its DetailType
    entry = events.only_entry
    assert entry["EventBusName"] == BUS
    assert entry["Source"] == "sourceflow"
    assert entry["DetailType"] == "Run Requested"
    # And its detail is the fields in the contract's envelope
    detail = json.loads(entry["Detail"])
    contracts.validate(detail, "run-requested")
    assert detail["schema"] == "run-requested"
    assert detail["version"] == 1
    assert detail["correlation_id"] == "src-1-run-requested"
    assert detail["produced_at"].endswith("Z")
    assert (detail["source_id"], detail["requested_by"]) == ("src-1", "jdoe")


def test_a_given_correlation_id_is_carried_by_the_detail() -> None:
    events = FakeEvents()
    EventPublisher(events, BUS)(
        "Run Requested", {"source_id": "src-1", "requested_by": "jdoe"}, "op-42"
    )
    assert json.loads(events.only_entry["Detail"])["correlation_id"] == "op-42"


def test_a_published_event_is_what_the_consumer_accepts() -> None:
    # Given a reset request published through the publisher
    events = FakeEvents()
    EventPublisher(events, BUS)(
        "Flow Reset Requested",
        {
            "source_id": "src-1",
            "expected_params": {"type": "Full Load"},
            "cause": "special_flow_succeeded",
            "decided_at": "2026-11-22T19:00:00Z",
            "evidence_execution_arn": RUN_ARN,
        },
    )
    entry = events.only_entry
    # When EventBridge wraps it in its envelope and the scheduler's queue delivers it
    delivered = envelope(
        entry["DetailType"], source=entry["Source"], detail=json.loads(entry["Detail"])
    )
    # Then the consumer takes it
    assert parse_event(body(delivered), SCHEDULER_TAKES)["detail"]["source_id"] == "src-1"


def test_every_detail_type_has_a_contract_on_disk() -> None:
    known = {name for name, _ in contracts.schema_names()}
    assert set(DETAIL_CONTRACTS.values()) <= known


def test_a_refused_entry_is_a_transient_error() -> None:
    events = FakeEvents(failed_entry_count=1)
    with pytest.raises(TransientError, match="Run Requested"):
        EventPublisher(events, BUS)("Run Requested", {"source_id": "src-1", "requested_by": "j"})
    assert len(events.put) == 1


def test_a_client_error_is_a_transient_error() -> None:
    throttled = client_error("ThrottlingException", "PutEvents")
    events = FakeEvents(error=throttled)
    with pytest.raises(TransientError) as caught:
        EventPublisher(events, BUS)("Run Requested", {"source_id": "src-1", "requested_by": "j"})
    assert BUS in str(caught.value)
    assert caught.value.__cause__ is throttled


@pytest.mark.parametrize(
    ("detail_type", "fields"),
    [
        ("Run Requested", {"source_id": "src-1"}),
        ("Run Requested", {"source_id": "src-1", "requested_by": ""}),
        ("Run Requested", {"source_id": "src-1", "requested_by": "j", "priority": "high"}),
        (
            "Flow Reset Requested",
            {
                "source_id": "src-1",
                "expected_params": None,
                "cause": "reset_at_passed",
                "decided_at": "2026-11-22T19:00:00Z",
                "evidence_execution_arn": RUN_ARN,
            },
        ),
    ],
)
def test_a_detail_that_breaks_its_contract_is_refused_before_anything_is_sent(
    detail_type: str, fields: dict[str, Any]
) -> None:
    events = FakeEvents()
    with pytest.raises(ContractViolation, match=DETAIL_CONTRACTS[detail_type]):
        EventPublisher(events, BUS)(detail_type, fields)
    assert events.put == []


def test_a_detail_without_source_id_is_a_contract_violation() -> None:
    events = FakeEvents()
    with pytest.raises(ContractViolation, match="source_id"):
        EventPublisher(events, BUS)("Run Requested", {"requested_by": "jdoe"})
    assert events.put == []


def test_an_event_given_its_time_is_put_with_it_and_the_scheduler_names_its_run_by_it() -> None:
    # `sourceflow run` gives the time, in whole seconds as EventBridge keeps it, so that it can
    # name the execution the scheduler will start for the request
    at = datetime(2026, 11, 28, 12, 30, 5, tzinfo=UTC)
    events = FakeEvents()
    event_id = EventPublisher(events, BUS)(
        "Run Requested", {"source_id": "src-1", "requested_by": "jdoe"}, at=at
    )
    assert events.only_entry["Time"] == at
    delivered = {**envelope(detail=json.loads(events.only_entry["Detail"])), "id": event_id}
    delivered["time"] = isoformat(at)
    assert requested_run(delivered).execution_name == execution_name(
        "src-1", at, requested_run_nonce(event_id)
    )


def test_an_event_not_given_its_time_is_timed_by_eventbridge() -> None:
    events = FakeEvents()
    EventPublisher(events, BUS)("Run Requested", {"source_id": "src-1", "requested_by": "jdoe"})
    assert "Time" not in events.only_entry
