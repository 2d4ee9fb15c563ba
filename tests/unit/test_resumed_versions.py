"""A download split across invocations decides record by record as one invocation would
(DESIGN.md, "The data guarantee"): each invocation rebuilds the run's version filter from its
last checkpoint — the tally it committed (services.download.domain.Tally, through its JSON) and
the versions it listed (`take_unsaved`, `own`) — so the split lands exactly what the whole
download would, counts the same and follows the cursor to the same place."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.download.domain import Tally
from shared.rules.flows import CLOCK_SKEW_ALLOWANCE, Window, WindowField, overlap
from shared.rules.versions import Version, VersionFilter, key_digest

BOUNDED = settings(max_examples=300, deadline=None, database=None, print_blob=True)
START = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
WINDOW = Window(WindowField.LAST_MODIFIED, START, END, False)
OVERLAP = overlap(timedelta(minutes=10))
CURSOR = START + timedelta(minutes=20)
# Stamps from inside the window to past its end plus the skew allowance (waiting, future).
STAMPS = st.integers(min_value=1, max_value=90).map(
    lambda minute: START + timedelta(minutes=minute)
)
VERSIONS = st.lists(
    st.tuples(
        STAMPS, st.integers(min_value=0, max_value=6).map(lambda k: key_digest({"id": k}, "id"))
    ),
    max_size=60,
)


def a_filter(landed: frozenset[Version], tally: Tally, own: set[Version]) -> VersionFilter:
    """The run's filter as download builds it for an invocation (services.download.service)."""
    return VersionFilter(
        window=WINDOW,
        overlap=OVERLAP,
        landed=landed,
        cursor_before=CURSOR,
        counts=tally.counts,
        newest=tally.newest,
        own=own,
    )


@BOUNDED
@given(
    served=VERSIONS,
    landed=st.frozensets(
        st.sampled_from(
            [(START + timedelta(minutes=m), key_digest({"id": 1}, "id")) for m in (5, 30)]
        )
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=6),
)
def test_a_download_split_into_invocations_lands_what_one_invocation_would(
    served: list[Version], landed: frozenset[Version], cuts: list[int]
) -> None:
    # Given what one invocation lands of what the source serves
    whole = a_filter(landed, Tally(), set())
    once = [version for version in served if whole.admit(*version)]

    # When the same download is cut into invocations at `cuts`, each starting from the last
    # checkpoint: its tally through JSON, and the versions listed with its parts
    split: list[Version] = []
    tally, own = Tally(), set[Version]()
    bounds = sorted({min(cut, len(served)) for cut in cuts} | {len(served)})
    start = 0
    for end in bounds:
        versions = a_filter(landed, tally, own)
        split += [version for version in served[start:end] if versions.admit(*version)]
        own |= set(versions.take_unsaved())
        tally = Tally.from_json(
            json.loads(json.dumps(Tally(counts=versions.counts, newest=versions.newest).to_json()))
        )
        start = end

    # Then it decides as one invocation would, and the cursor may move to the same stamp
    assert split == once
    assert (tally.counts, tally.newest) == (whole.counts, whole.newest)


def test_a_checkpoint_lists_what_the_run_landed_since_the_last_one() -> None:
    versions = VersionFilter(window=WINDOW, overlap=OVERLAP)
    early = (START + timedelta(minutes=1), key_digest({"id": 1}, "id"))
    late = (START + timedelta(minutes=50), key_digest({"id": 2}, "id"))
    future = (END + CLOCK_SKEW_ALLOWANCE + timedelta(days=1), key_digest({"id": 3}, "id"))
    assert versions.admit(*early)
    assert versions.take_unsaved() == [early]
    assert versions.take_unsaved() == []
    assert versions.admit(*late) and versions.admit(*future)
    assert versions.take_unsaved() == [late, future]
    # What no later window reads again is forgotten, listed or not
    assert versions.remembered() == [late, future]


@BOUNDED
@given(
    pages=st.lists(
        st.lists(st.tuples(STAMPS, st.integers(min_value=0, max_value=6)), max_size=8),
        max_size=12,
    ),
    takes=st.sets(st.integers(min_value=0, max_value=12)),
    forgets=st.sets(st.integers(min_value=0, max_value=12)),
)
def test_a_checkpoint_lists_exactly_the_landed_versions_the_run_still_holds(
    pages: list[list[tuple[datetime, int]]], takes: set[int], forgets: set[int]
) -> None:
    # Given pages of versions (a key met again with another stamp, future-dated ones, some
    # forgotten as the newest stamp moves on), listed at checkpoints after some of the pages
    versions = VersionFilter(
        window=WINDOW, overlap=OVERLAP, digest=lambda key: key_digest({"id": key}, "id")
    )
    landed: list[tuple[datetime, int]] = []
    for number, page in enumerate(pages):
        stamps, keys = [stamp for stamp, _ in page], [key for _, key in page]
        admitted = versions.admit_page(stamps, keys)
        landed += [met for met, lands in zip(page, admitted, strict=True) if lands]
        if number in forgets:
            versions.remembered()  # forgets what no later window reads again
        if number in takes:
            # Then each checkpoint lists what landed since the last one and is still held,
            # in the order it landed
            expected = [
                (stamp, key_digest({"id": key}, "id"))
                for stamp, key in landed
                if versions._holds(stamp, key)
            ]
            assert versions.take_unsaved() == expected
            landed = []
