"""shared.rules.throttling: what a Retry-After asks for, and how long a throttled page waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.rules.throttling import (
    LONGEST_RETRY_AFTER_SECONDS,
    PageThrottle,
    ThrottlePolicy,
    retry_after_seconds,
)

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
POLICY = ThrottlePolicy(max_wait_seconds=120)

# --- Retry-After --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Sun, 22 Nov 2026 09:02:00 GMT", 120.0),
        ("Sunday, 22-Nov-26 09:00:30 GMT", 30.0),  # the obsolete RFC 850 form
        ("Sun Nov 22 09:00:05 2026", 5.0),  # asctime, which names no zone: GMT
        ("Sun, 22 Nov 2026 08:00:00 GMT", 0.0),  # already past
    ],
)
def test_retry_after_is_seconds_or_an_http_date(value: str, seconds: float) -> None:
    assert retry_after_seconds(value, NOW) == seconds


@pytest.mark.parametrize(
    "value", [None, "", "soon", "-5", "1e3", "nan", "inf", "١٢", "5 s", "Sun, 99 Nov 2026"]
)
def test_a_retry_after_that_is_neither_is_no_retry_after(value: str | None) -> None:
    # An untrusted header: what cannot be read is ignored, and the backoff applies
    assert retry_after_seconds(value, NOW) is None


@given(st.integers(min_value=0, max_value=10**9))
def test_any_delay_seconds_reads_back(seconds: int) -> None:
    assert retry_after_seconds(str(seconds), NOW) == seconds


@pytest.mark.parametrize("value", ["9" * 400, "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_wait_of_years_is_read_as_the_longest(value: str) -> None:
    assert retry_after_seconds(value, NOW) == LONGEST_RETRY_AFTER_SECONDS


@given(st.integers(min_value=-(10**6), max_value=10**7))
def test_any_http_date_is_the_time_until_it(offset: int) -> None:
    date = format_datetime(NOW + timedelta(seconds=offset), usegmt=True)
    assert retry_after_seconds(date, NOW) == max(0, offset)


@given(st.text(max_size=60))
def test_no_header_breaks_the_reading(value: str) -> None:
    seconds = retry_after_seconds(value, NOW)
    assert seconds is None or seconds >= 0


# --- one page's waits ---------------------------------------------------------------------------

asked_seconds = st.none() | st.floats(min_value=0, max_value=1000, allow_nan=False)
draws = st.floats(min_value=0, max_value=1, exclude_max=True)


def test_a_page_waits_what_the_vendor_asks_and_no_sooner() -> None:
    throttle = PageThrottle(POLICY)
    assert throttle.next_wait(30, draw=0.0) == 30
    assert throttle.next_wait(30, draw=0.999) == pytest.approx(30 * 1.25, rel=1e-3)
    assert throttle.next_wait(0, draw=0.0) == POLICY.min_wait_seconds  # never in a loop


def test_without_retry_after_the_waits_double_up_to_the_backoffs_cap() -> None:
    throttle = PageThrottle(ThrottlePolicy(max_wait_seconds=10_000))
    waits = [throttle.next_wait(None, draw=0.0) for _ in range(9)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_a_wait_past_the_bound_is_refused_and_not_counted() -> None:
    throttle = PageThrottle(POLICY)
    assert throttle.next_wait(100, draw=0.0) == 100
    assert throttle.next_wait(30, draw=0.0) is None  # 130 > 120
    assert (throttle.retries, throttle.waited) == (1, 100)
    assert throttle.next_wait(20, draw=0.9) == 20  # what is left, the jitter cut to fit


@given(st.lists(st.tuples(asked_seconds, draws), max_size=200))
def test_a_page_never_waits_past_the_bound_nor_sooner_than_asked(
    answers: list[tuple[float | None, float]],
) -> None:
    throttle = PageThrottle(POLICY)
    for asked, draw in answers:
        before = throttle.waited
        wait = throttle.next_wait(asked, draw)
        if wait is None:
            # refused only when even the least it may wait does not fit
            assert before + max(asked or 0, POLICY.min_wait_seconds) > POLICY.max_wait_seconds
            assert throttle.waited == before
            continue
        assert wait >= max(asked or 0, POLICY.min_wait_seconds)
        assert throttle.waited == pytest.approx(before + wait)
        assert throttle.waited <= POLICY.max_wait_seconds + 1e-9


@given(asked_seconds, draws)
def test_a_vendor_asking_the_same_for_ever_is_left_after_a_bounded_number_of_tries(
    asked: float | None, draw: float
) -> None:
    throttle = PageThrottle(POLICY)
    tries = 0
    while throttle.next_wait(asked, draw) is not None:
        tries += 1
        assert tries <= POLICY.max_wait_seconds / POLICY.min_wait_seconds
