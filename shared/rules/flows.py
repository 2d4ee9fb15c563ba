"""The flow rules: which flow a source runs, which window it loads, where its cursor goes.

Everything here is pure: no clock, no database. Callers pass the run start time and the
source's stored values, so every rule is unit-testable on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from jsonschema.exceptions import ValidationError

from shared.errors import PermanentError
from shared.rules.limits import UnreadableJson
from shared.runtime import contracts
from shared.timefmt import isoformat, parse_iso

RESPECS_WINDOW_START = datetime(1990, 1, 1, tzinfo=UTC)
EARLIEST_SOLD_YEAR = 1990
# DESIGN.md, "The data guarantee". A record may become visible at its source up to a source's
# lateness allowance after its last-modified stamp (a long transaction stamped at its start, a
# lagging replica); every Normal window re-reads that much before the cursor. The default is
# public.source's column default (migration 0010; a unit test keeps the two equal).
DEFAULT_LATENESS_ALLOWANCE = timedelta(minutes=10)
# More than a day of re-reading at every run is a mistake, not an allowance.
MAX_LATENESS_ALLOWANCE = timedelta(days=1)
# How far the source's clock may be off the run's. Behind: the overlap grows by this much, so a
# stamp from a slow clock still falls in a window that re-reads it. Ahead: a record stamped up
# to this much after the window's end waits for a later window; one stamped later still is
# future-dated: counted, landed once, and never followed by the cursor.
CLOCK_SKEW_ALLOWANCE = timedelta(minutes=2)
# A source that keeps whole seconds stamps a write up to a second before it happened.
STAMP_RESOLUTION = timedelta(seconds=1)
# The finest stamp sourceflow reads: Python's and PostgreSQL's timestamps keep microseconds.
STAMP_PRECISION = timedelta(microseconds=1)


class FlowType(StrEnum):
    NORMAL = "normal"
    RESPECS = "respecs"
    FULL_LOAD = "full_load"
    SOLD = "sold"
    # A slice of a backfill (shared.rules.backfills): asked for with `sourceflow backfill`, never
    # written in batch_execution_params.
    BACKFILL = "backfill"


class WindowField(StrEnum):
    LAST_MODIFIED = "last_modified"
    SOLD_DATE = "sold_date"


# Hand-written params spell flows many ways; compare with case, spaces, dashes and
# underscores removed ("Re-specs", "RE-SPECS", "respecs", "Full Load", "full_load").
_SPELLINGS = {
    "normal": FlowType.NORMAL,
    "respecs": FlowType.RESPECS,
    "fullload": FlowType.FULL_LOAD,
    "backdated": FlowType.FULL_LOAD,
    "sold": FlowType.SOLD,
}
_CANONICAL_NAMES = {
    FlowType.NORMAL: "Normal",
    FlowType.RESPECS: "Re-specs",
    FlowType.FULL_LOAD: "Full Load",
    FlowType.SOLD: "Sold",
    FlowType.BACKFILL: "Backfill",
}
# The flows batch_execution_params may name (a backfill is asked for otherwise).
ALLOWED_FLOW_NAMES = tuple(_CANONICAL_NAMES[flow] for flow in dict.fromkeys(_SPELLINGS.values()))
# The shapes of hand-written params: which keys, of which types (contracts/).
PARAMS_CONTRACT = "batch-execution-params"


class InvalidFlowParams(PermanentError):
    error_name = "InvalidFlowParams"


class InvalidSourceSetting(PermanentError):
    error_name = "InvalidSourceSetting"


@dataclass(frozen=True)
class FlowParams:
    flow_type: FlowType
    sql: str | None = None
    year: int | None = None
    reset_at: datetime | None = None

    def canonical(self) -> dict[str, Any]:
        """The one spelling sourceflow writes back: `{"flow_type": "Re-specs", "sql": ...}`."""
        params: dict[str, Any] = {"flow_type": _CANONICAL_NAMES[self.flow_type]}
        if self.sql is not None:
            params["sql"] = self.sql
        if self.year is not None:
            params["year"] = self.year
        if self.reset_at is not None:
            params["reset_at"] = isoformat(self.reset_at)
        return params


@dataclass(frozen=True)
class Window:
    """The records a run loads: `field` in (start, end], or [start, end] if start_inclusive;
    a backfill slice's is [start, end) (`end_exclusive`), so that slices side by side share
    no instant."""

    field: WindowField
    start: datetime
    end: datetime
    start_inclusive: bool
    end_exclusive: bool = False

    def contains(self, moment: datetime) -> bool:
        """Whether a record whose `field` is `moment` belongs to the window (for sources that
        cannot filter for themselves)."""
        return self.after_start(moment) and self.before_end(moment)

    def after_start(self, moment: datetime) -> bool:
        return moment >= self.start if self.start_inclusive else moment > self.start

    def before_end(self, moment: datetime) -> bool:
        return moment < self.end if self.end_exclusive else moment <= self.end

    @property
    def last_included(self) -> datetime:
        """The window's last instant, for a source whose upper bound is inclusive: timestamps
        carry at most microseconds, so [start, end) is [start, end - 1 µs]."""
        return self.end - STAMP_PRECISION if self.end_exclusive else self.end

    @property
    def reads_past_end(self) -> bool:
        """A Normal, Full Load or Re-specs window is read past its end, so that download sees,
        counts and lands the records stamped in the future (`stamp_position`); a sold window
        and a backfill slice, a range of the past, are not."""
        return self.field is WindowField.LAST_MODIFIED and not self.end_exclusive

    def fetches(self, moment: datetime) -> bool:
        """Whether a connector that filters for itself reads a record whose field is `moment`."""
        return self.after_start(moment) if self.reads_past_end else self.contains(moment)


class StampPosition(StrEnum):
    IN_WINDOW = "in_window"
    # After the window's end but within the clock-skew allowance: a later window loads it.
    WAITING = "waiting"
    # Beyond the clock-skew allowance: landed and counted, never followed by the cursor.
    FUTURE = "future"


def stamp_position(window_end: datetime, stamp: datetime) -> StampPosition:
    if stamp <= window_end:
        return StampPosition.IN_WINDOW
    if stamp <= window_end + CLOCK_SKEW_ALLOWANCE:
        return StampPosition.WAITING
    return StampPosition.FUTURE


def overlap(lateness_allowance: timedelta) -> timedelta:
    """How far before the cursor a Normal window starts: the allowance, plus a clock behind,
    plus what a whole-second stamp cuts off (without it, a version written with the clock
    exactly the skew allowance behind lands before the window; found by the property tests)."""
    return lateness_allowance + CLOCK_SKEW_ALLOWANCE + STAMP_RESOLUTION


def recorded_allowance(allowance: timedelta | None) -> timedelta:
    """The allowance a run recorded in the ledger; a run from before allowances existed (NULL)
    is taken to have had the default. Zero is an allowance like any other."""
    return DEFAULT_LATENESS_ALLOWANCE if allowance is None else allowance


def check_lateness_allowance(source_id: str, allowance: timedelta) -> timedelta:
    if timedelta(0) <= allowance <= MAX_LATENESS_ALLOWANCE:
        return allowance
    raise InvalidSourceSetting(
        f"source {source_id!r}: lateness_allowance = {allowance} is not valid; expected from "
        f"0 to {MAX_LATENESS_ALLOWANCE} (default {DEFAULT_LATENESS_ALLOWANCE}); fix "
        "public.source.lateness_allowance"
    )


def parse_flow_params(source_id: str, raw: Mapping[str, Any] | UnreadableJson | None) -> FlowParams:
    """Normalise `batch_execution_params` as written by hand; reject anything ambiguous.

    The params are checked against their contract (contracts/batch-execution-params.v1) first;
    what is left here is what a schema cannot say: the flow's free spelling, and the rules that
    depend on the flow it names.
    """
    if isinstance(raw, UnreadableJson):
        raise InvalidFlowParams(
            f"source {source_id!r}: batch_execution_params cannot be read: it is {raw.reason}; "
            "write them again (`sourceflow flow set`)"
        )
    if not raw:
        return FlowParams(FlowType.NORMAL)
    problems = contracts.errors(raw, PARAMS_CONTRACT)
    if problems:
        raise _contract_problem(source_id, raw, problems[0])
    # The contract lets at most one spelling of each key through; a null value is no value.
    flow_key = "type" if "type" in raw else "flow_type"
    sql_key = "Sql" if "Sql" in raw else "sql"
    flow_type = _flow_type(source_id, flow_key, raw.get(flow_key))
    sql, year = raw.get(sql_key), raw.get("year")
    _check_flow_fields(source_id, flow_type, sql_key, sql, year)
    reset_at = raw.get("reset_at")
    return FlowParams(
        flow_type,
        sql=sql.strip() if sql is not None else None,
        year=year,
        reset_at=_parse_reset_at(source_id, reset_at) if reset_at is not None else None,
    )


def _flow_type(source_id: str, key: str, value: str | None) -> FlowType:
    if not value:
        return FlowType.NORMAL
    spelled = re.sub(r"[\s_-]", "", value).lower()
    if spelled not in _SPELLINGS:
        raise _invalid(source_id, key, value, _expected(key))
    return _SPELLINGS[spelled]


def _check_flow_fields(
    source_id: str, flow_type: FlowType, sql_key: str, sql: str | None, year: float | None
) -> None:
    """The fields the flow takes: a query for Re-specs alone, a year for Sold alone."""
    if flow_type is FlowType.RESPECS and sql is None:
        raise _invalid(source_id, sql_key, sql, "a non-empty attribute-update query for Re-specs")
    if flow_type is not FlowType.RESPECS and sql is not None:
        raise _invalid(source_id, sql_key, sql, "no query: only Re-specs runs a query")
    if year is not None and flow_type is not FlowType.SOLD:
        raise _invalid(source_id, "year", year, "no year: only Sold takes a year")
    if year is not None and not isinstance(year, int):  # JSON Schema's integers include 2021.0
        raise _invalid(source_id, "year", year, _expected("year"))


def _parse_reset_at(source_id: str, value: str) -> datetime:
    try:
        return parse_iso(value)  # the contract's date-times include some Python does not read
    except ValueError:
        raise _invalid(source_id, "reset_at", value, _expected("reset_at")) from None


def _contract_problem(
    source_id: str, raw: Mapping[str, Any], error: ValidationError
) -> InvalidFlowParams:
    """The first way `raw` breaks its contract, worded like the parser's own rejections."""
    properties = contracts.schema_of(PARAMS_CONTRACT)["properties"]
    if error.validator == "not":  # {"not": {"required": [a, b]}}: two spellings of one key
        first, second = error.validator_value["required"]
        return InvalidFlowParams(
            f"source {source_id!r}: batch_execution_params has both {first!r} and "
            f"{second!r}; keep one of them"
        )
    if error.validator == "additionalProperties":
        unknown = sorted(set(raw) - set(properties))[0]
        return _invalid(source_id, unknown, raw[unknown], f"only the keys {sorted(properties)}")
    if error.path:
        field = str(error.path[0])
        return _invalid(source_id, field, raw[field], _expected(field))
    return InvalidFlowParams(
        f"source {source_id!r}: batch_execution_params is not valid: {error.message}"
    )


def _expected(field: str) -> str:
    """What the contract expects in `field`, as its description says."""
    return str(contracts.schema_of(PARAMS_CONTRACT)["properties"][field]["description"])


def _invalid(source_id: str, field: str, value: object, expected: str) -> InvalidFlowParams:
    return InvalidFlowParams(
        f"source {source_id!r}: batch_execution_params.{field} = {value!r} is not valid; "
        f"expected {expected}"
    )


def plan_window(
    source_id: str,
    params: FlowParams,
    *,
    cursor: datetime | None,
    run_start: datetime,
    backdate_days: int,
    lateness_allowance: timedelta = DEFAULT_LATENESS_ALLOWANCE,
    landed_since: datetime | None = None,
) -> Window:
    """The window a run loads, per DESIGN.md's table of flows.

    A Normal window starts `overlap(lateness_allowance)` before the cursor, to load the records
    that became visible late, but never before `landed_since`, from which on the versions
    already landed are known and skipped (a window starting earlier would land some twice;
    after the allowance is raised, the overlap grows as runs go by). A cursor moved back by
    hand below `landed_since` is an operator's reload: the window starts where it says.
    """
    if run_start.tzinfo is None:
        raise ValueError("run_start must be timezone-aware")
    backdated = Window(
        WindowField.LAST_MODIFIED, run_start - timedelta(days=backdate_days), run_start, True
    )
    match params.flow_type:
        case FlowType.NORMAL:
            if cursor is None:
                return backdated
            start = cursor - overlap(lateness_allowance)
            if landed_since is not None and landed_since <= cursor:
                start = max(start, landed_since)
            # A cursor ahead of the run start (written by hand, or by a version from before the
            # cursor stopped following future stamps) yields an empty window rather than one
            # that runs backwards.
            return Window(WindowField.LAST_MODIFIED, min(start, run_start), run_start, False)
        case FlowType.FULL_LOAD:
            return backdated
        case FlowType.RESPECS:
            return Window(WindowField.LAST_MODIFIED, RESPECS_WINDOW_START, run_start, True)
        case FlowType.SOLD:
            year = params.year if params.year is not None else run_start.year
            if year > run_start.year:
                raise InvalidFlowParams(
                    f"source {source_id!r}: batch_execution_params.year = {year} is after the "
                    f"run start ({run_start.year}); expected a year up to {run_start.year}"
                )
            return Window(WindowField.SOLD_DATE, datetime(year, 1, 1, tzinfo=UTC), run_start, True)
        case FlowType.BACKFILL:
            raise ValueError("a backfill's window is its slice's (shared.rules.backfills)")
    raise AssertionError(f"unhandled flow type {params.flow_type}")


def is_first_run(runtime_count_after_start: int) -> bool:
    """DESIGN.md: a source whose runtime count is 1 (this run is its first) is backdated."""
    return runtime_count_after_start == 1


FIRST_RUN_PARAMS: dict[str, Any] = {"type": "Full Load"}


def moves_cursor(flow_type: FlowType) -> bool:
    """Sold runs filter on the sold date, so they say nothing about the LMD cursor; a backfill
    reloads a range of the past beside the Normal timeline, which it neither moves nor covers."""
    return flow_type not in (FlowType.SOLD, FlowType.BACKFILL)


def recorded_window(
    flow_type: FlowType, field: WindowField, start: datetime, end: datetime, start_inclusive: bool
) -> Window:
    """A run's window from what the ledger and the run's plan carry: a backfill slice's ends
    before its end (contracts/common.v1 `flow_plan`)."""
    return Window(field, start, end, start_inclusive, end_exclusive=flow_type is FlowType.BACKFILL)


def advance_cursor(current: datetime | None, newest_loaded: datetime | None) -> datetime | None:
    """The cursor moves to the newest last-modified date loaded, and never backwards. Download
    reports as newest only stamps inside the window, so the cursor never passes the run's
    start: a record stamped in the future is never followed."""
    if newest_loaded is None:
        return current
    if current is None:
        return newest_loaded
    return max(current, newest_loaded)


def landed_since_after(
    landed_since: datetime | None, cursor_after: datetime | None, lateness_allowance: timedelta
) -> datetime | None:
    """From which stamp on the landed versions are still listed after a run that moved the
    cursor: the versions no later window re-reads are dropped from the list."""
    if cursor_after is None:
        return landed_since
    horizon = cursor_after - overlap(lateness_allowance)
    return horizon if landed_since is None else max(landed_since, horizon)
