"""One rendering of timestamps everywhere: ISO-8601 in UTC with a trailing Z (`readable` for
people: to the second, a space for the T, still in UTC and saying so)."""

from __future__ import annotations

from datetime import UTC, datetime


def isoformat(moment: datetime) -> str:
    return _in_utc(moment).isoformat().replace("+00:00", "Z")


def readable(moment: datetime) -> str:
    """`2026-11-28 12:00:05Z`: what a table cell or a line for people shows of a time."""
    return _in_utc(moment).strftime("%Y-%m-%d %H:%M:%SZ")


def _in_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"naive timestamp {moment!r}: every sourceflow timestamp is UTC-aware")
    return moment.astimezone(UTC)


def parse_iso(value: str) -> datetime:
    """Parse ISO-8601 with `Z` or an offset; a value without a zone, or out of datetime's
    range once in UTC, is a ValueError."""
    moment = datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z as UTC
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone")
    if moment.tzinfo is UTC:
        return moment
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-05:00 is in the year 10000 in UTC
        raise ValueError(f"timestamp {value!r} is out of range in UTC") from None


def utc_now() -> datetime:
    """The time now, UTC-aware: the clock a service takes by default."""
    return datetime.now(UTC)
