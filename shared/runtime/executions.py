"""Starting a run: one Step Functions execution per source, always with a meaningful name.

The local emulator gives every unnamed execution the same ARN, and on AWS a name makes a run
findable; so the name is `<source_id>-<UTC start>-<nonce>` (at most 80 characters).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from datetime import UTC, datetime
from typing import Any, NamedTuple

from shared.runtime.catalogue import DetailType
from shared.runtime.events import EventPublisher
from shared.store.db import Database

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def execution_name(source_id: str, started: datetime, nonce: str | None = None) -> str:
    nonce = nonce if nonce is not None else secrets.token_hex(4)
    stamp = started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return _NAME_UNSAFE.sub("-", f"{source_id[:50]}-{stamp}-{nonce}")[:80]


def requested_run_nonce(event_id: str) -> str:
    """The name suffix of the run a `Run Requested` event starts: derived from the event's id,
    so a duplicate delivery names the same execution, and the requester can find it."""
    return "req" + hashlib.sha256(event_id.encode()).hexdigest()[:8]


def execution_arn(state_machine_arn: str, name: str) -> str:
    """The ARN of the execution called `name` of a state machine, named by its own ARN or by an
    alias's or version's (`…:stateMachine:<machine>:<qualifier>`): an execution is named after
    the state machine alone, whichever started it."""
    machine = state_machine_arn.split(":stateMachine:", 1)
    if len(machine) != 2:
        raise ValueError(f"{state_machine_arn!r} is not a state machine's ARN")
    unqualified = machine[1].split(":", 1)[0]
    return f"{machine[0]}:execution:{unqualified}:{name}"


def start_run(
    sfn_client: Any,
    state_machine_arn: str,
    source_id: str,
    *,
    started: datetime | None = None,
    nonce: str | None = None,
) -> str:
    """Start one execution for `source_id`; returns its ARN."""
    name = execution_name(source_id, started or datetime.now(UTC), nonce)
    return start_named_run(sfn_client, state_machine_arn, source_id, name)


def start_named_run(sfn_client: Any, state_machine_arn: str, source_id: str, name: str) -> str:
    """Start one execution for `source_id` under a name made before (`execution_name`);
    returns its ARN."""
    response = sfn_client.start_execution(
        stateMachineArn=state_machine_arn, name=name, input=json.dumps({"source_id": source_id})
    )
    return str(response["executionArn"])


class RunRequest(NamedTuple):
    event_id: str
    execution_name: str  # what the scheduler starts (or queues) the run as


def request_run(
    publish: EventPublisher,
    db: Database,
    source_id: str,
    *,
    requested_by: str,
    reason: str,
    correlation_id: str,
) -> RunRequest:
    """Publish `Run Requested` for `source_id` (`sourceflow run`, a workflow's ingest task) and
    record the request; returns the event's id and the name of the execution the scheduler
    starts for it, which the event's time and id make. Who asked is the database login
    (migration 0020's trigger), whatever `requested_by` says."""
    # The event's time as the scheduler reads it: EventBridge keeps whole seconds.
    requested_at = datetime.now(UTC).replace(microsecond=0)
    event_id = publish(
        DetailType.RUN_REQUESTED,
        {"source_id": source_id, "requested_by": requested_by, "reason": reason},
        correlation_id=correlation_id,
        at=requested_at,
    )
    name = execution_name(source_id, requested_at, requested_run_nonce(event_id))
    with db.transaction() as cur:
        cur.execute(
            "INSERT INTO public.run_request (execution_name, source_id) VALUES (%s, %s)",
            (name, source_id),
        )
    return RunRequest(event_id, name)
