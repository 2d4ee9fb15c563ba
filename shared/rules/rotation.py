"""A secret rotated while a warm container keeps its old value: the one rule every service
follows, for its own database login (shared/store/db.py) and for a source's credentials
(shared/connectors).

A container reads a secret once and keeps it (Secrets Manager bills and throttles per call), so
after a rotation it still offers the old value. When the other side refuses what was offered
(PostgreSQL's authentication failure, a vendor's 401 or 403), the secret is read again from
Secrets Manager, past any cache, and the attempt made once more; a second refusal is reported
as any refusal is. Once, so that a wrong secret costs one more read per attempt, not a loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def once_more_with_the_secret_read_again(
    attempt: Callable[[], T],
    *,
    refused: Callable[[Exception], bool],
    read_again: Callable[[], None],
) -> T:
    """`attempt()`; if it raises an error `refused` says is the secret's refusal, `read_again()`
    and `attempt()` once more, whose error, if any, goes to the caller."""
    try:
        return attempt()
    except Exception as exc:
        if not refused(exc):
            raise
    read_again()
    return attempt()
