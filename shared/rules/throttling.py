"""How long a connector waits when a vendor asks it to slow down: a 429 (Too Many Requests) or
a 503 (Service Unavailable) answer, with or without `Retry-After` (RFC 9110 §10.2.3: a number
of seconds, or an HTTP-date).

The page is asked for again after the wait, in the same download: nothing already read is read
again. The wait is never shorter than the vendor asked, carries jitter (downloads throttled
together do not all come back at the same moment), backs off exponentially when the vendor
names no time, and is bounded: one page waits at most `max_wait_seconds`, its retries together.
A vendor that asks for more is left alone (the connector stops the download by name, as a
transient error: its message is retried later).

Everything here is pure: the clock's reading and the random draw are arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# The answers that ask a client to come back later rather than fail.
THROTTLED_STATUSES = frozenset({429, 503})
# delay-seconds (RFC 9110: 1*DIGIT); a decimal fraction, which some vendors send, is read too.
_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# A longer wait (years, or a number of 300 digits) is read as this: past every bound all the same.
LONGEST_RETRY_AFTER_SECONDS = 1e9


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """The wait a `Retry-After` header asks for, in seconds from `now` (0 for a date already
    past, at most LONGEST_RETRY_AFTER_SECONDS). None when there is none, or when it is neither a
    number of seconds nor an HTTP-date: the vendor's header is untrusted, and an unreadable one
    is treated as absent."""
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return min(float(text), LONGEST_RETRY_AFTER_SECONDS)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # an HTTP-date is in GMT, whether or not it says so
        moment = moment.replace(tzinfo=UTC)
    return min(max(0.0, (moment - now).total_seconds()), LONGEST_RETRY_AFTER_SECONDS)


@dataclass(frozen=True)
class ThrottlePolicy:
    """How long a throttled page waits before it is asked for again."""

    # The most one page waits, all its throttled tries together (download's
    # VENDOR_MAX_WAIT_SECONDS).
    max_wait_seconds: float
    # The shortest wait: a vendor that says "0", or says nothing, is not asked again in a loop.
    min_wait_seconds: float = 1.0
    # Without Retry-After the waits double from min_wait_seconds up to this.
    max_backoff_seconds: float = 60.0
    # Each wait is lengthened by up to this fraction of itself, at random.
    jitter: float = 0.25

    def wait_for(self, asked: float | None, retries: int, draw: float) -> float:
        """The wait before a page's next try, unbounded: `asked` is what Retry-After asks for
        (None: nothing), `retries` how many times the page was throttled before, `draw` a
        random number in [0, 1)."""
        if asked is None:
            base = min(self.min_wait_seconds * 2 ** min(retries, 32), self.max_backoff_seconds)
        else:
            base = max(asked, self.min_wait_seconds)
        return base * (1 + self.jitter * draw)


@dataclass
class PageThrottle:
    """One page's throttled tries: how often and how long it has waited so far."""

    policy: ThrottlePolicy
    retries: int = 0
    waited: float = 0.0

    def next_wait(self, asked: float | None, draw: float) -> float | None:
        """The wait before the page's next try, counted; None when even the least the vendor
        asks for would take the page past the policy's `max_wait_seconds` (the jitter is cut to
        fit rather than pass it)."""
        floor = max(asked if asked is not None else 0.0, self.policy.min_wait_seconds)
        left = self.policy.max_wait_seconds - self.waited
        if floor > left:
            return None
        wait = min(self.policy.wait_for(asked, self.retries, draw), left)
        self.retries += 1
        self.waited += wait
        return wait
