"""services.download.service.download_delivery: one SQS delivery's claim and heartbeat, wired as
the Lambda handler wires them (the handler only passes its settings and ports)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.download.service import download_delivery
from shared.runtime.deliveries import Delivery
from shared.store.db import Database
from tests.builders import records_modified
from tests.fakes import FakeConnector, FakeSink
from tests.integration.conftest import (
    CURSOR,
    MakeSource,
    NewExecution,
    lock_of,
    run_row,
    validate,
)

CLAIM_SECONDS = 45
LEASE = timedelta(hours=2)


def test_each_heartbeat_keeps_the_message_hidden_and_renews_the_lease_and_the_claim(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a validated run of three records
    execution = new_execution(make_source(cursor=CURSOR))
    plan = validate(db, execution)["plan"]
    records = records_modified(*(CURSOR + timedelta(minutes=minute) for minute in (1, 2, 3)))
    _, _, lease_before = lock_of(db, execution.source_id)
    hidden: list[int] = []
    sent: list[str] = []
    request = execution.download(plan)

    # When one delivery of its download-request downloads, with a heartbeat due on every record
    result = download_delivery(
        request,
        Delivery(message_id="message-1", receive_count=1, keep_hidden=hidden.append),
        db=db,
        connector_for=FakeConnector(records).factory(),
        sink=sink,
        send_heartbeat=sent.append,
        lease=LEASE,
        claim_seconds=CLAIM_SECONDS,
        heartbeat_seconds=0.001,
        part_max_records=1000,
        stop_margin_seconds=30,
    )

    # Then the run is downloaded under this message's claim
    assert result["records"] == 3
    run = run_row(db, execution.arn)
    assert run is not None
    assert (run["status"], run["download_message_id"]) == ("downloaded", "message-1")
    # And every heartbeat went to the task's token and kept the message hidden for the claim
    assert len(sent) >= 2  # the first, before connecting, and the last, before the manifest
    assert set(sent) == {request["task_token"]}
    # (and once more as the delivery began, before anything else)
    assert hidden == [CLAIM_SECONDS] * (len(sent) + 1)
    # And the lease was renewed to this delivery's lease, from the last heartbeat on
    _, _, lease_after = lock_of(db, execution.source_id)
    assert lease_after > max(lease_before, datetime.now(UTC) + LEASE - timedelta(minutes=5))
