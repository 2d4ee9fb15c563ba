"""Redriving a failed run (`sourceflow redrive`, ops/redrives.py): how it was done, and what a
redrive's new run runs again. The ledger of redrives is shared/store/redrives.py."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.rules.flows import FlowParams, Window


class RedriveHow(StrEnum):
    """How a failed run was redriven (migration 0023's CHECK constraint allows these)."""

    REDRIVE_EXECUTION = "redrive_execution"  # Step Functions continued the same execution
    NEW_RUN = "new_run"  # a new execution over the failed run's window


@dataclass(frozen=True)
class RedrivenRun:
    """What a redrive's new run runs again: the failed run's flow and window."""

    failed_run: str
    params: FlowParams
    window: Window
