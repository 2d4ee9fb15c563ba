"""The e2e harness, one module per concern, each part a fixture of tests/e2e/conftest.py:

- stack: the session's embedded stack (its short timeouts) and `Aws`, its clients
- waits: `WAIT_SECONDS`, the one bound of every wait, and `wait_for`
- vendor: `Vendor`, the demo vendor's API (upserts, clock, faults)
- sources: `Sources` (fixture `sources`), datasets and sources of a test's own, rows by hand
- runs: `Runs` (fixture `runs`), starting runs, waiting for them, what they left behind
- events: `Events` (fixture `events`), notifications and alerts
- ticks: `Ticks` (fixture `ticks`), the schedule rules fired and the scheduler waited for
- cli: `Cli` (fixture `cli`), the operator's `sourceflow` command

A test takes the parts it uses; `Harness` (fixture `harness`) is all of them at once. The
helpers more than one test file plays with, imported from their modules: faults (a fault armed
in a service's workers), approvals (Re-specs at the gate), backfills (slices a tick),
source_types (datasets of each type) and workflow_runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.e2e.harness.cli import Cli
from tests.e2e.harness.events import Events
from tests.e2e.harness.runs import RunResult, Runs
from tests.e2e.harness.sources import SlowSource, Sources
from tests.e2e.harness.stack import APPROVAL_SECONDS, Aws
from tests.e2e.harness.ticks import Ticks
from tests.e2e.harness.vendor import Vendor
from tests.e2e.harness.waits import RUN_SECONDS, WAIT_SECONDS, wait_for


@dataclass
class Harness(Sources, Runs, Events, Ticks, Cli):
    """Every part of the harness at once, over one stack, database, AWS and vendor."""


__all__ = [
    "APPROVAL_SECONDS",
    "RUN_SECONDS",
    "WAIT_SECONDS",
    "Aws",
    "Cli",
    "Events",
    "Harness",
    "RunResult",
    "Runs",
    "SlowSource",
    "Sources",
    "Ticks",
    "Vendor",
    "wait_for",
]
