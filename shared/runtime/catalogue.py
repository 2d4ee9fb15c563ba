"""sourceflow's settings and vocabulary, each defined once, here.

- `Timeouts`: every timeout of a run, and the redelivery and lease values that must fit inside
  them. Its defaults are the cloud's: the templates deploy them (tests/unit/test_templates.py
  proves every literal there equals these), and a service reads them when its environment says
  nothing (`CLOUD_TIMEOUTS`, read by shared/runtime/settings.py and services/*/settings.py).
  The embedded stack runs with its own (local/stack.py `LOCAL_TIMEOUTS`), handed to its workers
  through the same environment variables.
- `RetryPolicy`: how a failed delivery is retried inside those timeouts.
- The other defaults a service reads from its environment (`PART_MAX_RECORDS`, `RAW_GZIP_LEVEL`,
  `RESPECS_STATEMENT_TIMEOUT_MS`, `RESPECS_APPROVAL_REQUIRED`, `VENDOR_MAX_WAIT_SECONDS`,
  `VENDOR_SLOT_WAIT_SECONDS`, and the download concurrency the scheduler admits runs by:
  `DOWNLOAD_CONCURRENCY`, `DOWNLOAD_BATCH_SIZE`).
- `OVERDUE_AFTER_PERIODS`: how many schedule periods a scheduled source may go without a
  success before it is overdue, unless the source says otherwise.
- `POSTGRES_MAJOR_VERSION`: the PostgreSQL major the database runs.
- `DetailType`, `EVENT_SOURCE`, `SCHEDULED_EVENT`: the events on sourceflow's bus, and
  `RUNS_MAY_START_AFTER`, those the scheduler admits runs on.
- `Step`: the state machine's steps, as a failed run names them.

A template or the state machine definition that must carry one of these as a literal is proven
equal to it by a test (tests/unit/test_templates.py, tests/unit/test_state_machine_definition.py).
This module imports nothing of sourceflow's, so that every room can read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Step(StrEnum):
    """The state machine's steps as a failed run names them: the `failed_step` of the ledger,
    of the alert and of the run-failed event (common.v1 `failed_step`), and the step a service's
    task serves. Unlock is one step run by two states (`states`)."""

    VALIDATE = "Validate"
    APPROVE = "Approve"
    DOWNLOAD = "Download"
    UNLOCK = "Unlock"

    @property
    def states(self) -> tuple[str, ...]:
        """The definition's task states that run this step."""
        if self is Step.UNLOCK:
            return ("UnlockAfterSuccess", "UnlockAfterFailure")
        return (self.value,)


class DetailType(StrEnum):
    """The events sourceflow puts on its bus, by their EventBridge DetailType."""

    RUN_REQUESTED = "Run Requested"
    RUN_SUCCEEDED = "Run Succeeded"
    RUN_FAILED = "Run Failed"
    RUN_CANCELLED = "Run Cancelled"
    APPROVAL_REQUESTED = "Approval Requested"
    FLOW_RESET_REQUESTED = "Flow Reset Requested"
    FLOW_RESET_APPLIED = "Flow Reset Applied"
    SOURCE_OVERDUE = "Source Overdue"
    SOURCE_RECOVERED = "Source Recovered"

    @property
    def contract(self) -> str:
        """The contract its detail follows: "Run Succeeded" has a run-succeeded detail."""
        return self.value.lower().replace(" ", "-")


# The events after which the scheduler starts the runs admission allows: a request puts a run in
# the line, a run's end frees its place (infra/resources.py routes them to the scheduler).
RUNS_MAY_START_AFTER = (
    DetailType.RUN_REQUESTED,
    DetailType.RUN_SUCCEEDED,
    DetailType.RUN_FAILED,
    DetailType.RUN_CANCELLED,
)

EVENT_SOURCE = "sourceflow"
"""The `source` of every sourceflow event."""
SCHEDULED_EVENT = "Scheduled Event"
"""The DetailType EventBridge schedule rules deliver (from `aws.events`)."""

# What a service reads when its environment does not say otherwise, beside its timeouts (each
# is read from the environment variable of its name).
PART_MAX_RECORDS = 100_000
"""Records per raw object a download writes."""
RAW_GZIP_LEVEL = 1
"""The gzip level of raw objects, ISA-L's (0-3): 1 compresses ~10x faster than zlib's 6, into
objects ~40% larger (docs/performance.md); 2 is a little smaller, 3 much slower. A deployment
chooses it with service.yaml's RawGzipLevel, whose default is this one (test_templates.py)."""
RESPECS_STATEMENT_TIMEOUT_MS = 60_000
"""How long a Re-specs query may run inside unlocking's transaction."""
RESPECS_APPROVAL_REQUIRED = True
"""Whether a Re-specs query waits for a second person's approval."""
VENDOR_MAX_WAIT_SECONDS = 120.0
"""The most one page of a vendor waits while the vendor answers 429 or 503 (Retry-After), its
retries together, before the download yields (SourceThrottled) and its message is retried."""
VENDOR_SLOT_WAIT_SECONDS = 300.0
"""The most a download waits for one of its vendor's concurrency slots (public.vendor_limit)
before it yields (VendorSlotsBusy) and its message is retried. With the page wait it fits inside
the download function's timeout (tests/unit/test_templates.py)."""
DOWNLOAD_CONCURRENCY = 10
"""How many downloads run at once in the cloud: the download function's MaximumConcurrency
(infra/templates/service.yaml). The scheduler admits as many runs at once
(shared/rules/admission.py); the embedded stack's is its number of download workers."""
DOWNLOAD_BATCH_SIZE = 1
"""Messages per download invocation: one, so that no download message waits behind another
(shared/rules/admission.py `admission_capacity` refuses any other)."""
OVERDUE_AFTER_PERIODS = 2.0
"""A scheduled source's default `overdue_after_periods` (public.source's column default,
migration 0019): it is overdue once this many of its schedule periods pass without a success
(shared/rules/freshness.py)."""
POSTGRES_MAJOR_VERSION = 16
"""The PostgreSQL major the database runs: the embedded stack's (pgserver) and the one the core
template asks the cloud for. The Re-specs checker parses with this major's grammar, so pglast's
major is pinned to it (pglast 6 reads PostgreSQL 16). Tests prove the parser and the core
template (tests/unit/test_respecs.py) and the embedded server
(tests/integration/test_respecs_queries.py) agree with it, and unlocking refuses a Re-specs
query on a server of another major (shared/rules/respecs.py `check_server_major`)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed delivery is retried: SQS redelivery after a growing visibility timeout,
    until the queue's maxReceiveCount (which `max_receives` must equal)."""

    max_receives: int
    base_backoff_seconds: float
    max_backoff_seconds: float = 300.0

    def backoff_seconds(self, receive_count: int) -> int:
        delay = self.base_backoff_seconds * (2 ** max(receive_count - 1, 0))
        # Visibility timeouts are whole seconds; round up so a sub-second base still waits.
        return min(math.ceil(delay), int(self.max_backoff_seconds))


@dataclass(frozen=True)
class Timeouts:
    """Task timeouts of the state machine, how validation's and unlocking's messages are
    redelivered inside them, and the lease that must outlast a whole run. The defaults are the
    cloud's (`CLOUD_TIMEOUTS`)."""

    validate_seconds: int = 240
    download_seconds: int = 3600
    download_heartbeat_seconds: int = 120
    unlock_seconds: int = 600
    # SQS redelivery bounds: receives before the DLQ, and the first backoff step.
    max_receive_count: int = 5
    retry_backoff_seconds: float = 2.0
    # Validation's and unlocking's function timeouts and their queues' visibility timeouts. A
    # delivery that dies without answering (after its commit, say) is handed out again after
    # the visibility timeout, which must come while the task still waits: every delivery the
    # queue allows fits inside the task's timeout (`redelivery_seconds`). AWS requires the
    # visibility to be at least the function's timeout; it is a little more, so that a delivery
    # cut off at its timeout is over before its message comes back. Unlocking's function
    # outlasts the Re-specs statement timeout (RESPECS_STATEMENT_TIMEOUT_MS) its transaction
    # may use up.
    validation_function_seconds: int = 30
    validation_visibility_seconds: int = 45
    unlocking_function_seconds: int = 90
    unlocking_visibility_seconds: int = 120
    # How often the download service heartbeats (well inside download_heartbeat_seconds).
    heartbeat_interval_seconds: float = 20.0
    lock_lease_seconds: int = 900
    # How long a run waits for a person to approve its Re-specs query (Approve task).
    approval_seconds: int = 86_400
    # The download function's timeout (Lambda's longest): an invocation stops before it, at a
    # part it commits, when what it has left falls below the stop margin (or a quarter of its
    # time, if less: services/download/domain.py `invocation_budget`), and the state machine
    # continues it in a new Download task, at most `max_download_continuations` times. The
    # margin holds what may come between the decision and the stop: a page, throttled at the
    # longest (VENDOR_MAX_WAIT_SECONDS) and read at the slowest, and the part's upload (after
    # the one before it, which goes up while the next part is read).
    download_function_seconds: int = 900
    download_stop_margin_seconds: int = 240
    max_download_continuations: int = 200

    @property
    def download_claim_seconds(self) -> int:
        """A download delivery's claim (and its message's visibility) outlives three missed
        heartbeats, then lapses so the message's next delivery can take over."""
        return max(2, math.ceil(3 * self.heartbeat_interval_seconds))

    def redelivery_seconds(self, *, function_seconds: int, visibility_seconds: int) -> int:
        """The longest a task message's deliveries can take, from the first until the last one
        the queue allows has answered: each delivery before the last dies without answering
        (its message comes back after the visibility timeout) or fails at its function timeout
        (and comes back after its retry backoff); the last one reports within its function
        timeout, by name if it fails."""
        retry = self._retry_policy()
        held = (
            max(visibility_seconds, function_seconds + retry.backoff_seconds(receive))
            for receive in range(1, self.max_receive_count)
        )
        return sum(held) + function_seconds

    @property
    def download_takeover_seconds(self) -> int:
        """The longest from a dead download delivery's last heartbeat until its message's next
        delivery heartbeats: the message comes back as the claim lapses (every heartbeat keeps
        both alive for download_claim_seconds), and a delivery that still finds the claim live
        is handed out again after its retry backoff. So download needs no visibility timeout
        shorter than its task's: its heartbeats set it."""
        last_backoff = self._retry_policy().backoff_seconds(self.max_receive_count - 1)
        return self.download_claim_seconds + last_backoff

    def delivery_problems(self) -> list[str]:
        """What breaks "a step that committed is never reported as failed": a validation or
        unlocking message whose delivery died after its commit must come back, and every
        delivery the queue allows answer, while its task still waits; a dead download's message
        must be taken over before its task's heartbeat times out."""
        problems = []
        if self.max_receive_count < 3:
            problems.append(f"max_receive_count {self.max_receive_count}: under two redeliveries")
        steps = {
            Step.VALIDATE: (
                self.validate_seconds,
                self.validation_function_seconds,
                self.validation_visibility_seconds,
            ),
            Step.UNLOCK: (
                self.unlock_seconds,
                self.unlocking_function_seconds,
                self.unlocking_visibility_seconds,
            ),
        }
        for step, (task, function, visibility) in steps.items():
            if visibility < function:
                problems.append(
                    f"{step}: its queue's visibility timeout ({visibility} s) is shorter than "
                    f"its function's timeout ({function} s), which AWS refuses"
                )
            redelivery = self.redelivery_seconds(
                function_seconds=function, visibility_seconds=visibility
            )
            if redelivery > task:
                problems.append(
                    f"{step}: the deliveries its queue allows may take {redelivery} s, longer "
                    f"than the task's timeout ({task} s)"
                )
        if self.download_stop_margin_seconds >= self.download_function_seconds:
            problems.append(
                f"Download: its stop margin ({self.download_stop_margin_seconds} s) leaves "
                f"nothing of its function's timeout ({self.download_function_seconds} s)"
            )
        if self.download_takeover_seconds >= self.download_heartbeat_seconds:
            problems.append(
                f"Download: a dead delivery's message may be taken over only after "
                f"{self.download_takeover_seconds} s, past the task's heartbeat timeout "
                f"({self.download_heartbeat_seconds} s)"
            )
        return problems

    def _retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_receive_count, self.retry_backoff_seconds)


CLOUD_TIMEOUTS = Timeouts()
"""The cloud's timeouts: what the templates deploy, and what a service reads by default."""
