"""The lease lock on a source: held by one execution until released or until it expires."""

from __future__ import annotations

from datetime import datetime


def lease_is_live(locked_by: str | None, lock_expires_at: datetime | None, now: datetime) -> bool:
    """A lock counts only while its lease lasts: a dead owner's expired lock can be taken."""
    return locked_by is not None and lock_expires_at is not None and lock_expires_at > now
