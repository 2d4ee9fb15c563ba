"""The embedded stack an e2e session runs on, and how tests reach its parts."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from local.stack import LOCAL_TIMEOUTS, StackOptions
from tests.e2e.harness.waits import WAIT_SECONDS

# The Approve task's timeout. A test approves a run only after a few `sourceflow` commands,
# each a new process, and waits for each as long as WAIT_SECONDS: a shorter approval timeout
# times the run out first on a loaded machine (it did at 15 s, load average 12). The test that
# watches one run out waits this long.
APPROVAL_SECONDS = int(WAIT_SECONDS)

# The Download task's HeartbeatSeconds: short, so that a test can prove heartbeats keep a slow
# download alive past it and watch a hung one time out, yet long enough for a download worker
# started on a loaded machine to take a dead one's message over and heartbeat (at 8 s it did
# not, load average 9 to 12 on two CPUs: a new process imports boto3 and powertools first).
HEARTBEAT_SECONDS = 20

# What a test calls to get an AWS client of the stack: aws("sqs").
Aws = Callable[[str], Any]


def stack_options(state_dir: Path) -> StackOptions:
    """The stack of the e2e session: the schedule fired by tests, the approval gate off."""
    timeouts = replace(
        LOCAL_TIMEOUTS,
        download_heartbeat_seconds=HEARTBEAT_SECONDS,
        heartbeat_interval_seconds=1.0,
        approval_seconds=APPROVAL_SECONDS,
    )
    return StackOptions(
        state_dir=state_dir,
        database_url=os.environ.get("DATABASE_URL") or None,
        timeouts=timeouts,
        ticker=False,  # tests fire the schedule rules themselves, when they mean to
        # Re-specs tests run their queries unasked; tests/e2e/test_approvals.py turns it on.
        approval_gate=False,
    )
