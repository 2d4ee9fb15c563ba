"""A source's connector (records of a window) and validation's check of a connection."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.connectors.base import MalformedRows, Position, Waiting, no_waiting
from shared.connectors.pacing import UNPACED, Pacing
from shared.rules.flows import Window
from shared.timefmt import parse_iso


def landed(records: Iterable[dict[str, Any] | None]) -> Iterator[dict[str, Any]]:
    """A connector's records without its check-ins (the None it yields between records)."""
    return (record for record in records if record is not None)


@dataclass
class FakeConnector:
    """Yields the given records for any window; counts how often it is asked for them. It
    reports the rows of `malformed` as rows it could not load, and `warnings`. It resumes
    after every `page`-th record (its position: the records served), from the position it is
    given (`resumed_from` keeps them); with `page` 0 it cannot resume at all."""

    items: list[dict[str, Any]]
    windows: list[Window] = field(default_factory=list)
    yielded: int = 0
    on_record: Callable[[int], None] | None = None
    malformed: MalformedRows = field(default_factory=MalformedRows)
    key_field: str | None = "id"
    page: int = 1
    warnings: list[str] = field(default_factory=list)
    resumed_from: list[Position | None] = field(default_factory=list)
    position: Position | None = None

    @property
    def resumable(self) -> bool:
        return self.page > 0

    pacing: Pacing = UNPACED

    def check(self) -> None:
        pass

    def records(
        self, window: Window, resume: Position | None = None, *, waiting: Waiting = no_waiting
    ) -> Iterator[dict[str, Any] | None]:
        self.windows.append(window)
        self.resumed_from.append(resume)
        start = resume["served"] if resume else 0
        for served, item in enumerate(self.items[start:], start=start + 1):
            self.yielded += 1
            if self.on_record is not None:
                self.on_record(self.yielded)
            at_page_end = self.page > 0 and (served % self.page == 0 or served == len(self.items))
            self.position = {"served": served} if at_page_end else None
            yield dict(item)
            self.position = None

    def last_modified(self, record: Mapping[str, Any]) -> datetime | None:
        value = record.get("last_modified")
        return parse_iso(value) if value else None

    def factory(self) -> Callable[..., FakeConnector]:
        """`connector_for` as download calls it; the pacing it is given is kept in `pacing`."""

        def connector_for(
            source_id: str,
            source_type: str,
            connection: Mapping[str, Any],
            *,
            pacing: Pacing = UNPACED,
        ) -> FakeConnector:
            self.pacing = pacing
            return self

        return connector_for


@dataclass
class WindowedSource(FakeConnector):
    """A source that serves what a window reads of it (`Window.fetches`), as it is now."""

    items: list[dict[str, Any]] = field(default_factory=list)

    page: int = 0  # serves what the window reads as the source is now: no position in it

    def records(
        self, window: Window, resume: Position | None = None, *, waiting: Waiting = no_waiting
    ) -> Iterator[dict[str, Any] | None]:
        self.windows.append(window)
        for item in self.items:
            if window.fetches(parse_iso(item["last_modified"])):
                self.yielded += 1
                yield dict(item)


@dataclass
class FakeConnectionCheck:
    """Validation's check of a source's connection: records what it was asked; fails with
    `error` when one is given."""

    error: Exception | None = None
    checked: list[str] = field(default_factory=list)

    def __call__(self, source_id: str, source_type: str, connection: Any) -> None:
        self.checked.append(source_id)
        if self.error is not None:
            raise self.error
