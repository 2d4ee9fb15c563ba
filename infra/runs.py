"""Following executions to their end, for the demo, the CLI and the tests."""

from __future__ import annotations

import time
from typing import Any


class ExecutionStillRunning(RuntimeError):
    pass


def wait_for_execution(
    sfn_client: Any, execution_arn: str, timeout: float = 120.0
) -> dict[str, Any]:
    """Poll until the execution ends; returns DescribeExecution's answer."""
    deadline = time.monotonic() + timeout
    while True:
        described: dict[str, Any] = sfn_client.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        if time.monotonic() > deadline:
            raise ExecutionStillRunning(f"{execution_arn} still running after {timeout:.0f}s")
        time.sleep(0.1)
