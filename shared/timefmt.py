"""One rendering of timestamps everywhere: ISO-8601 in UTC with a trailing Z."""

from __future__ import annotations

from datetime import UTC, datetime


def isoformat(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"naive timestamp {moment!r}: every sourceflow timestamp is UTC-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(value: str) -> datetime:
    """Parse ISO-8601 with `Z` or an offset; a value without a zone is an error."""
    moment = datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z as UTC
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone")
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def utc_now() -> datetime:
    """The time now, UTC-aware: the clock a service takes by default."""
    return datetime.now(UTC)
