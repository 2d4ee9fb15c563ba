"""Admission: how many runs may be under way at once, and which waiting runs start next.

A Download task's `HeartbeatSeconds` is counted from when its message is sent, so time spent
waiting in the download queue behind other downloads counts against it: with more runs under
way than downloads that can run at once, the last of a burst waits for the ones before it and
times out (1,000 sources due at once on the embedded stack: 684 of them failed with
States.Timeout at Download). So the scheduler starts a run only while fewer runs are under way
— admitted, and not yet downloaded — than downloads can run at once: then every Download
message finds a download consumer free, however long the downloads take. The rest wait, in
order, until a place frees (the scheduler looks on every tick, run request and run end).

Downloads that can run at once: the download function's concurrency (the event source
mapping's MaximumConcurrency in the cloud, the download workers on the embedded stack), each
taking a batch of one message. A batch of more would make the messages behind the first in a
batch wait for it, heartbeat clock running, so the rule refuses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class WaitingRun:
    """A run waiting to start: its execution's name, and the parts the name is made of."""

    execution_name: str
    source_id: str
    started_for: datetime
    nonce: str


class InvalidAdmission(ValueError):
    pass


def admission_capacity(download_concurrency: int, download_batch_size: int) -> int:
    """How many runs may be under way at once: one per download that can run at once."""
    if download_concurrency < 1:
        raise InvalidAdmission(
            f"download concurrency {download_concurrency}: at least one download must be able "
            "to run; set the download function's MaximumConcurrency (or its workers) to 1 or more"
        )
    if download_batch_size != 1:
        raise InvalidAdmission(
            f"download batch size {download_batch_size}: a download message behind another in "
            "its batch waits for it with its heartbeat clock running; set the download "
            "function's BatchSize to 1"
        )
    return download_concurrency


def runs_to_admit(waiting: Sequence[T], *, under_way: int, capacity: int) -> list[T]:
    """The waiting runs to start now, oldest first: as many as there are free places."""
    return list(waiting[: max(capacity - under_way, 0)])
