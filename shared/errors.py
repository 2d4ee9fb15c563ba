"""The two kinds of error every service distinguishes, plus malformed messages.

A `PermanentError` ends the Step Functions task with `SendTaskFailure` and its `error_name`,
which the state machine catches by name. A `TransientError` is raised out of the handler so
that SQS redelivers the message (with backoff through the visibility timeout). A
`ContractViolation` means the message itself cannot be trusted: it goes to the DLQ path.
"""

from __future__ import annotations


class SourceflowError(Exception):
    """Base of every error sourceflow raises on purpose."""


class PermanentError(SourceflowError):
    """Retrying cannot help; the run fails with this named error."""

    error_name = "PermanentError"

    def __init__(self, message: str, *, error_name: str | None = None) -> None:
        super().__init__(message)
        if error_name is not None:
            self.error_name = error_name


class TransientError(SourceflowError):
    """Retrying later may help: timeouts, throttling, lost connections."""


class ContractViolation(SourceflowError):
    """A message that does not match its JSON Schema, is not JSON, or has an unknown version."""
