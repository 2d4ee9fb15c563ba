"""A source's settings as people write them: the options of `sourceflow sources add|edit|
schedule`, and each item of a sources file (`sourceflow apply`, `sourceflow sources export`).

The shapes (which fields, of which types, the id's spelling) are the contract's
(contracts/source-settings.v1.schema.json); what a schema cannot say is checked here, each by the
rule the services apply when they read the row: a duration's spelling, the schedule
(shared.rules.schedules), the lateness allowance (shared.rules.flows), the periods after which
a scheduled source is overdue (shared.rules.freshness). The connection is the
connectors' to check (shared.connectors.SourceAccess.check_settings): it depends on its type.

Everything here is pure: no clock, no database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

from shared.errors import PermanentError
from shared.rules.flows import (
    DEFAULT_LATENESS_ALLOWANCE,
    InvalidSourceSetting,
    check_lateness_allowance,
)
from shared.rules.freshness import check_overdue_after_periods
from shared.rules.limits import STORED_JSON_MAX_BYTES
from shared.rules.schedules import InvalidSchedule, source_schedule
from shared.runtime import contracts
from shared.runtime.catalogue import OVERDUE_AFTER_PERIODS

SETTINGS_CONTRACT = "source-settings"
# public.source.backdate_days's default (migration 0001; a unit test keeps the two equal).
DEFAULT_BACKDATE_DAYS = 30

# A duration as people write one: `15m`, `1h30m`, `2 days`, `0s`.
_DURATION_PART = re.compile(r"\s*(\d{1,18})\s*([a-z]+)\s*")
_DURATION_UNITS = {
    **dict.fromkeys(("us",), timedelta(microseconds=1)),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), timedelta(seconds=1)),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), timedelta(minutes=1)),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), timedelta(hours=1)),
    **dict.fromkeys(("d", "day", "days"), timedelta(days=1)),
    **dict.fromkeys(("w", "week", "weeks"), timedelta(weeks=1)),
}
# How a duration is written back (`format_duration`): in its largest whole unit.
_WRITTEN_UNITS = (
    ("w", timedelta(weeks=1)),
    ("d", timedelta(days=1)),
    ("h", timedelta(hours=1)),
    ("m", timedelta(minutes=1)),
    ("s", timedelta(seconds=1)),
    # (only an interval written by hand in SQL has a fraction of a second)
    ("us", timedelta(microseconds=1)),
)


class InvalidSourceSettings(PermanentError):
    error_name = "InvalidSourceSettings"


@dataclass(frozen=True)
class SourceSettings:
    """What people set of a source; each field is the public.source column of its name."""

    source_id: str
    source_type: str
    name: str
    connection: Mapping[str, Any]
    backdate_days: int = DEFAULT_BACKDATE_DAYS
    schedule_interval: timedelta | None = None
    schedule_cron: str | None = None
    lateness_allowance: timedelta = DEFAULT_LATENESS_ALLOWANCE
    overdue_after_periods: float = OVERDUE_AFTER_PERIODS

    def columns(self) -> dict[str, Any]:
        return {column.name: getattr(self, column.name) for column in fields(self)}


COLUMNS = tuple(column.name for column in fields(SourceSettings))
# The field of a sources file (and of the contract) that holds each column, where they differ.
FILE_FIELDS = {"source_id": "id", "source_type": "type"}


def file_field(column: str) -> str:
    return FILE_FIELDS.get(column, column)


def parse_duration(text: str) -> timedelta:
    """`15m`, `1h30m`, `2 days`, `0s`: whole numbers, each with a unit (s, m, h, d, w or their
    words; us for microseconds). ValueError says what is wrong."""
    parts = _DURATION_PART.findall(text.lower())
    rebuilt = "".join(f"{amount}{unit}" for amount, unit in parts)
    if not parts or rebuilt != re.sub(r"\s+", "", text.lower()):
        raise ValueError(f"{text!r} is not a duration; write e.g. 15m, 1h, 2d or 1h30m")
    total = timedelta(0)
    for amount, unit in parts:
        if unit not in _DURATION_UNITS:
            raise ValueError(f"{text!r}: {unit!r} is not a unit; use s, m, h, d or w")
        try:
            total += int(amount) * _DURATION_UNITS[unit]
        except OverflowError:
            raise ValueError(f"{text!r} is too long to be a duration") from None
    return total


def format_duration(value: timedelta) -> str:
    """The duration in the largest unit that divides it (`parse_duration` reads it back)."""
    if value == timedelta(0):
        return "0s"
    unit, length = next((u, n) for u, n in _WRITTEN_UNITS if value % n == timedelta(0))
    return f"{value // length}{unit}"


def settings_from_entry(entry: Any) -> SourceSettings:
    """The settings a sources-file item (or the options of `sourceflow sources add`) gives, in
    file terms (`id`, `type`, …); InvalidSourceSettings names every problem, each with its
    field. A field left out takes its default: a file says what a source is, whole."""
    if not isinstance(entry, Mapping):
        raise InvalidSourceSettings("a source is a mapping of id, type, connection, …")
    # (a problem's path names the field: `backdate_days: 0 is less than …`)
    problems = [
        problem.removeprefix("$: ").removeprefix("$.")
        for problem in contracts.violations(entry, SETTINGS_CONTRACT)
    ]
    if not problems and len(json.dumps(entry["connection"])) > STORED_JSON_MAX_BYTES:
        problems.append(f"connection: is over {STORED_JSON_MAX_BYTES} bytes as JSON")
    if problems:
        raise InvalidSourceSettings(_where(entry) + "; ".join(problems) + _SEE_CONTRACT)
    source_id = entry["id"]
    durations = {}
    for column in ("schedule_interval", "lateness_allowance"):
        if entry.get(column) is not None:
            try:
                durations[column] = parse_duration(entry[column])
            except ValueError as exc:
                problems.append(f"{column}: {exc}")
    if problems:
        raise InvalidSourceSettings(_where(entry) + "; ".join(problems))
    settings = SourceSettings(
        source_id=source_id,
        source_type=entry["type"],
        name=entry.get("name") or source_id,
        connection=entry["connection"],
        backdate_days=entry.get("backdate_days", DEFAULT_BACKDATE_DAYS),
        schedule_interval=durations.get("schedule_interval"),
        schedule_cron=entry.get("schedule_cron"),
        lateness_allowance=durations.get("lateness_allowance", DEFAULT_LATENESS_ALLOWANCE),
        overdue_after_periods=entry.get("overdue_after_periods", OVERDUE_AFTER_PERIODS),
    )
    check_rules(settings)
    return settings


_SEE_CONTRACT = f" (see contracts/{SETTINGS_CONTRACT}.v1.schema.json)"


def _where(entry: Mapping[str, Any]) -> str:
    source_id = entry.get("id")
    return f"source {source_id!r}: " if isinstance(source_id, str) else ""


def check_rules(settings: SourceSettings) -> None:
    """The rules the services apply when they read these settings, applied before they are
    stored: the scheduler's reading of the schedule and of the overdue periods, validation's of
    the lateness allowance."""
    try:
        source_schedule(settings.source_id, settings.schedule_interval, settings.schedule_cron)
        check_lateness_allowance(settings.source_id, settings.lateness_allowance)
        check_overdue_after_periods(settings.source_id, settings.overdue_after_periods)
    except (InvalidSchedule, InvalidSourceSetting) as exc:
        raise InvalidSourceSettings(str(exc).replace("; fix public.source.", "; fix ")) from None


def entry_of(settings: SourceSettings) -> dict[str, Any]:
    """The settings as a sources-file item: what `settings_from_entry` reads back as equal."""
    entry: dict[str, Any] = {}
    for column, value in settings.columns().items():
        if value is None:
            continue
        entry[file_field(column)] = (
            format_duration(value) if isinstance(value, timedelta) else value
        )
    return entry


def settings_of_row(row: Mapping[str, Any]) -> SourceSettings:
    """A public.source row's settings, as stored (however they were written)."""
    return SourceSettings(**{column: row[column] for column in COLUMNS})


def differences(current: SourceSettings, wanted: SourceSettings) -> dict[str, tuple[Any, Any]]:
    """Each column whose value `wanted` changes: (from, to)."""
    before, after = current.columns(), wanted.columns()
    return {
        column: (before[column], after[column])
        for column in COLUMNS
        if before[column] != after[column]
    }
