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
from typing import Any

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
    response = sfn_client.start_execution(
        stateMachineArn=state_machine_arn, name=name, input=json.dumps({"source_id": source_id})
    )
    return str(response["executionArn"])
