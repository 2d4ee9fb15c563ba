"""shared.rules.versions: a page admitted at once (`VersionFilter.admit_page`) lands, counts
and remembers exactly what its versions admitted one by one (`admit`) would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.rules.flows import CLOCK_SKEW_ALLOWANCE, Window, WindowField
from shared.rules.versions import Version, VersionFilter, key_digest

BOUNDED = settings(max_examples=300, deadline=None, database=None, print_blob=True)
START = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
CURSOR = START + timedelta(minutes=20)
# Stamps on both sides of every bound: before the window, in it, waiting, far in the future.
OFFSETS = st.sampled_from(
    [
        -timedelta(minutes=1),
        timedelta(0),
        timedelta(minutes=20),
        timedelta(minutes=59),
        timedelta(hours=1),
        timedelta(hours=1) + CLOCK_SKEW_ALLOWANCE,
        timedelta(days=30),
    ]
)
VERSIONS = st.tuples(OFFSETS, st.integers(0, 5)).map(
    lambda drawn: (START + drawn[0], key_digest({"id": drawn[1]}, "id"))
)
WINDOWS = st.sampled_from(
    [
        Window(WindowField.LAST_MODIFIED, START, END, False),
        Window(WindowField.LAST_MODIFIED, START, END, True, end_exclusive=True),
    ]
)


def a_filter(window: Window, landed: frozenset[Version], dedupe: bool) -> VersionFilter:
    return VersionFilter(
        window=window,
        overlap=timedelta(minutes=12),
        landed=landed,
        dedupe=dedupe,
        cursor_before=CURSOR if dedupe else None,
    )


@BOUNDED
@given(
    window=WINDOWS,
    pages=st.lists(st.lists(VERSIONS, max_size=8), max_size=6),
    landed=st.frozensets(VERSIONS, max_size=4),
    dedupe=st.booleans(),
)
def test_a_page_at_once_decides_as_its_versions_one_by_one(
    window: Window, pages: list[list[Version]], landed: frozenset[Version], dedupe: bool
) -> None:
    # Given the same run's filter twice
    by_page, one_by_one = a_filter(window, landed, dedupe), a_filter(window, landed, dedupe)
    for page in pages:
        # When one admits each page at once, the other each version in turn
        stamps, digests = [stamp for stamp, _ in page], [digest for _, digest in page]
        at_once = by_page.admit_page(stamps, digests)
        # Then they land the same versions
        assert at_once == [one_by_one.admit(*version) for version in page]
    # And count, follow and remember the same
    assert by_page.counts == one_by_one.counts
    assert by_page.newest == one_by_one.newest
    assert sorted(by_page.remembered()) == sorted(one_by_one.remembered())


def test_a_page_of_new_versions_is_decided_without_a_version_by_version_pass() -> None:
    # Given a page of versions none met before, all inside the window
    window = Window(WindowField.LAST_MODIFIED, START, END, False)
    versions = a_filter(window, frozenset(), dedupe=True)
    stamps = [START + timedelta(minutes=m) for m in (30, 10, 45)]
    digests = [key_digest({"id": n}, "id") for n in range(3)]
    versions.admit = None  # type: ignore[assignment,method-assign]  # never asked
    # When it is admitted, Then all land, the late one is counted, the newest stamp followed
    assert versions.admit_page(stamps, digests) == [True, True, True]
    assert (versions.counts.late_records, versions.newest) == (1, stamps[2])


def test_a_run_forgets_only_the_versions_out_of_the_overlaps_reach() -> None:
    # Given a run that has met a key twice, long ago and lately, another long ago, and one
    # future-dated version, and forgets as soon as it can
    window = Window(WindowField.LAST_MODIFIED, START, END, False)
    versions = VersionFilter(window=window, overlap=timedelta(minutes=12), _forget_at=1)
    old, recent, future = START, END - timedelta(minutes=5), END + timedelta(days=30)
    a, b, c = (key_digest({"id": n}, "id") for n in "abc")
    assert versions.admit_page([old, old, recent, future], [a, b, a, c]) == [True] * 4
    # When a page brings the newest stamp, Then it remembers only what a later window may meet
    assert versions.admit_page([END], [b]) == [True]
    assert sorted(versions.remembered()) == sorted([(recent, a), (END, b), (future, c)])
