"""The two kinds of error every service distinguishes, plus malformed messages.

A `PermanentError` ends the Step Functions task with `SendTaskFailure` and its `error_name`,
which the state machine catches by name. A `TransientError` is raised out of the handler so
that SQS redelivers the message (with backoff through the visibility timeout). A
`ContractViolation` means the message itself cannot be trusted: it goes to the DLQ path.
"""

from __future__ import annotations


class SourceflowError(Exception):
    """Base of every error sourceflow raises on purpose."""


class _NamedError(SourceflowError):
    """An error a run can fail with: `error_name` is the class's own unless one is given."""

    error_name: str

    def __init__(self, message: str, *, error_name: str | None = None) -> None:
        super().__init__(message)
        if error_name is not None:
            self.error_name = error_name


class PermanentError(_NamedError):
    """Retrying cannot help; the run fails with this named error."""

    error_name = "PermanentError"


class TransientError(_NamedError):
    """Retrying later may help: timeouts, throttling, lost connections.

    `error_name` is what the run fails with if the last allowed delivery still meets it.
    """

    error_name = "TransientError"


class TaskOver(SourceflowError):
    """The Step Functions task this message belongs to has ended (timed out, failed, or done).

    Step Functions answers InvalidToken, TaskTimedOut or TaskDoesNotExist; all three mean the
    same thing to a worker: stop and write nothing more.
    """


class ContractViolation(SourceflowError):
    """A message that does not match its JSON Schema, is not JSON, or has an unknown version."""


class DuplicateDelivery(SourceflowError):
    """Another delivery of the same work holds its claim and is doing it; this one stands down."""


class RunCancelled(PermanentError):
    """An operator cancelled the run; the step that notices stops and the run ends cancelled."""

    error_name = "RunCancelled"


class LockLost(PermanentError):
    """The source's lock is no longer held by this run's execution: the step stops, and writes
    nothing that only the lock holder may write."""

    error_name = "LockLost"


def bounded_line(text: str, limit: int) -> str:
    """Text from outside (a server's or a vendor's message) fit to leave in an error: one line
    of at most `limit` characters, every character Python does not call printable (line breaks,
    terminal escapes, bidirectional overrides, unassigned code points) turned into a space, so
    it can neither forge a log line nor reorder what a person reads."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
