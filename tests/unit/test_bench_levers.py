"""The benchmark's levers (bench/transfer.py `--levers`): each download without one still
decides exactly as the download with it (they are measured against each other)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bench.transfer import _turn_off
from shared.rules.flows import Window, WindowField
from shared.rules.versions import VersionFilter

START = datetime(2026, 11, 1, tzinfo=UTC)
WINDOW = Window(WindowField.LAST_MODIFIED, START, START + timedelta(days=10), False)


@pytest.fixture
def restored() -> Iterator[None]:
    """The methods a lever replaces, put back afterwards (a lever replaces them in its process)."""
    held = VersionFilter._held
    try:
        yield
    finally:
        VersionFilter._held = held  # type: ignore[method-assign]


def landed_and_listed() -> list[tuple[datetime, bytes]]:
    versions = VersionFilter(window=WINDOW, overlap=timedelta(days=1))
    stamps = [START + timedelta(days=n) for n in range(1, 9)]
    versions.admit_page(stamps, [bytes([n]) for n in range(8)])
    versions.admit(stamps[0], b"\x00")  # met again: skipped
    return versions.take_unsaved()


def test_without_listing_per_page_a_part_lists_the_same_versions(restored: None) -> None:
    listed = landed_and_listed()
    _turn_off(["listed-per-page"])
    assert landed_and_listed() == listed
