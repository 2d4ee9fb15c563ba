"""A source row and a vendor are untrusted, end to end on the embedded stack: a connection may
use only its own source's secrets, and what a hostile vendor says reaches the ledger, the Run
Failed event, the alert and the logs only as a short excerpt, without the key or its links
(tests/fakes/hostile.py plays the vendor, on 127.0.0.1)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.e2e.harness import Harness, wait_for
from tests.fakes.hostile import Answer, SentRequest, serving_http

DAY = timedelta(days=1)


def _logs(harness: Harness) -> str:
    logs: Path = harness.stack.options.state_dir / "logs"
    return "".join(path.read_text(errors="replace") for path in sorted(logs.glob("*.log")))


def test_a_connection_naming_another_sources_secret_reads_and_sends_nothing(
    harness: Harness,
) -> None:
    # Given a postgres source's secret holding the partner database's password
    connection = harness.partner_table_connection("listings", harness.unique_name())
    # And an http_api source whose row names that secret as its API key, sent to a collector
    cursor = datetime.now(UTC) - DAY
    with serving_http(lambda _: Answer(200, b'{"records": []}')) as collector:
        evil = harness.new_source(
            harness.unique_name(),
            connection={
                "base_url": collector.url,
                "dataset": "anything",
                "api_key_secret": connection["password_secret"],
            },
            cursor=cursor,
            runtime_count=3,
        )

        # When it runs
        result = harness.run(evil)

    # Then validation refuses the secret by name before reading it; nothing reached the collector
    assert (result.status, result.error) == ("FAILED", "SecretNotAllowed"), result
    assert (result.run["failed_step"], result.run["status"]) == ("Validate", "failed")
    detail = result.run["error_detail"]
    assert detail.startswith(f"source {evil!r}: connection.api_key_secret = ")
    assert f"named {harness.partner.secrets.source_prefix(evil)}<name>" in detail
    assert collector.received == []
    assert harness.partner.reader_password not in detail
    assert result.source is not None
    assert (result.source["locked_by"], result.source["runtime_count"]) == (None, 3)


def test_a_vendors_error_body_reaches_people_only_as_a_short_excerpt_without_key_or_links(
    harness: Harness,
) -> None:
    # Given a source with an API key of its own, whose vendor answers 400 with a body that
    # echoes the request's headers and asks the reader to click a link, on several lines
    source_id = harness.source_id_of(harness.unique_name())
    api_key = f"key-{uuid.uuid4().hex}"
    key_secret = harness.source_secret(source_id, "api-key", api_key)

    def hostile(request: SentRequest) -> Answer:
        echoed = "\n".join(f"{name}: {value}" for name, value in request.headers.items())
        text = f"bad request\n{echoed}\nURGENT: click http://evil.example/login to fix\n"
        return Answer(400, json.dumps({"error": text + "x" * 2000}).encode())

    with serving_http(hostile) as vendor:
        harness.new_source(
            source_id.removeprefix("src-"),
            connection={"base_url": vendor.url, "dataset": "d", "api_key_secret": key_secret},
            cursor=datetime.now(UTC) - DAY,
            runtime_count=3,
        )

        # When it runs
        result = harness.run(source_id)

    # Then the download failed by name, having sent the key to the vendor only
    assert (result.status, result.error) == ("FAILED", "SourceRequestRejected"), result
    assert (result.run["failed_step"], result.run["status"]) == ("Download", "failed")
    assert [request.headers.get("X-Api-Key") for request in vendor.received] == [api_key]

    # And what people read quotes the vendor briefly, on one line, without the key or the link:
    # the ledger, the Run Failed event, the alert
    events = harness.outcome_events({result.execution_arn})
    event = json.dumps(events[result.execution_arn]["detail"])
    alerts = wait_for(lambda: harness.alerts_about(source_id), "the run's alert")
    detail = result.run["error_detail"]
    for place, text in {"ledger": detail, "event": event, "alert": "".join(alerts)}.items():
        assert api_key not in text, f"the key is in the {place}"
        assert "evil.example" not in text, f"the vendor's link is in the {place}"
    assert "\n" not in detail and len(detail) < 600
    assert "[link removed]" in detail and "the vendor said: " in detail
    # And the logs and execution histories hold no key either
    history = harness.aws("stepfunctions").get_execution_history(executionArn=result.execution_arn)
    assert api_key not in str(history["events"])
    assert api_key not in _logs(harness)
