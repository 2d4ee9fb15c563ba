"""Faults a test arms in the stack's workers (local/worker.py reads SOURCEFLOW_FAULT)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from local.stack import LocalStack
from local.worker import AFTER_COMMIT


@contextmanager
def dies_once_after_commit(stack: LocalStack, service: str, tmp_path: Path) -> Iterator[Path]:
    """The service's workers, redeployed so that the first to commit a task's work dies before
    reporting it; yields the file the dying worker leaves behind. Redeployed without the fault
    on leaving (the dead worker replaced too)."""
    marker = tmp_path / f"{service}-{AFTER_COMMIT}"
    stack.redeploy(service, {"SOURCEFLOW_FAULT": f"{service}:{AFTER_COMMIT}:{marker}"})
    try:
        yield marker
    finally:
        stack.redeploy(service, {"SOURCEFLOW_FAULT": ""})
