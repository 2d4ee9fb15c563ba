"""shared.connectors.prefetch: a source's pages read ahead on a thread of their own."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from shared.connectors.prefetch import prefetched


def test_items_come_in_order_and_an_error_after_the_items_made_before_it() -> None:
    def pages() -> Iterator[int]:
        yield from (1, 2, 3)
        raise LookupError("page 4 is broken")

    taken: list[int] = []
    with pytest.raises(LookupError, match="page 4 is broken"):
        taken.extend(prefetched(pages))
    assert taken == [1, 2, 3]


def test_a_caller_that_stops_early_stops_the_reader_which_cleans_up_on_its_own_thread() -> None:
    made: list[int] = []
    cleaned = threading.Event()

    def pages() -> Iterator[int]:
        try:
            for page in range(1_000):
                made.append(page)
                yield page
        finally:
            cleaned.set()

    reading = prefetched(pages, ahead=2)
    assert [next(reading), next(reading)] == [0, 1]
    reading.close()
    assert cleaned.wait(10)
    assert len(made) <= 2 + 2 + 1  # taken, waiting to be taken, and the one on its way
