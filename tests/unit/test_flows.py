"""The flow rules of DESIGN.md: params spellings, windows, the first-run rule, the cursor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.rules.flows import (
    ALLOWED_FLOW_NAMES,
    CLOCK_SKEW_ALLOWANCE,
    FIRST_RUN_PARAMS,
    PARAMS_CONTRACT,
    RESPECS_WINDOW_START,
    STAMP_RESOLUTION,
    FlowParams,
    FlowType,
    InvalidFlowParams,
    InvalidSourceSetting,
    StampPosition,
    Window,
    WindowField,
    advance_cursor,
    check_lateness_allowance,
    is_first_run,
    landed_since_after,
    moves_cursor,
    overlap,
    parse_flow_params,
    plan_window,
    stamp_position,
)
from shared.runtime import contracts

RUN_START = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, FlowType.NORMAL),
        ({}, FlowType.NORMAL),
        ({"flow_type": None}, FlowType.NORMAL),
        ({"flow_type": ""}, FlowType.NORMAL),
        ({"flow_type": "Normal"}, FlowType.NORMAL),
        ({"type": "NORMAL"}, FlowType.NORMAL),
        ({"type": "Full Load"}, FlowType.FULL_LOAD),
        ({"type": "full_load"}, FlowType.FULL_LOAD),
        ({"type": "Sold"}, FlowType.SOLD),
        ({"type": "SOLD"}, FlowType.SOLD),
        ({"type": "Re-specs", "Sql": "UPDATE t SET a = 1"}, FlowType.RESPECS),
        ({"type": "RE-SPECS", "sql": "UPDATE t SET a = 1"}, FlowType.RESPECS),
        ({"flow_type": "respecs", "sql": "UPDATE t SET a = 1"}, FlowType.RESPECS),
    ],
)
def test_every_documented_spelling_is_accepted(raw: dict | None, expected: FlowType) -> None:
    assert parse_flow_params("src-1", raw).flow_type is expected


def test_params_normalise_to_one_canonical_form() -> None:
    # Given two hand-written spellings of the same Re-specs params
    legacy = parse_flow_params("s", {"type": "RE-SPECS", "Sql": " UPDATE t SET a = 1 "})
    modern = parse_flow_params("s", {"flow_type": "Re-specs", "sql": "UPDATE t SET a = 1"})
    # Then both are written back the same way
    assert (
        legacy.canonical()
        == modern.canonical()
        == {
            "flow_type": "Re-specs",
            "sql": "UPDATE t SET a = 1",
        }
    )


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"type": "Weekly"}, ["'src-1'", "batch_execution_params.type", "'Weekly'", "'Sold'"]),
        ({"flow_type": 3}, ["batch_execution_params.flow_type", "3", "'Normal'"]),
        ({"typ": "Sold"}, ["batch_execution_params.typ", "only the keys"]),
        ({"type": "Sold", "flow_type": "Normal"}, ["both", "'flow_type'", "'type'"]),
        ({"type": "Re-specs"}, ["batch_execution_params.sql", "Re-specs"]),
        ({"type": "Normal", "sql": "UPDATE t SET a=1"}, ["only Re-specs runs a query"]),
        ({"type": "Sold", "year": "2021"}, ["batch_execution_params.year", "'2021'"]),
        ({"type": "Normal", "year": 2021}, ["only Sold takes a year"]),
        ({"type": "Sold", "reset_at": "tomorrow"}, ["batch_execution_params.reset_at"]),
    ],
)
def test_bad_params_are_rejected_naming_source_field_and_value(raw: dict, words: list[str]) -> None:
    with pytest.raises(InvalidFlowParams) as caught:
        parse_flow_params("src-1", raw)
    assert caught.value.error_name == "InvalidFlowParams"
    for word in words:
        assert word in str(caught.value)


def test_a_null_value_is_no_value() -> None:
    raw = {"flow_type": None, "sql": None, "year": None, "reset_at": None}

    assert parse_flow_params("src-1", raw).canonical() == {"flow_type": "Normal"}


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        # JSON Schema counts 2021.0 as an integer; a year is a whole number all the same
        ({"type": "Sold", "year": 2021.0}, ["batch_execution_params.year", "2021.0", "1990"]),
        (["Sold"], ["'src-1'", "batch_execution_params", "object"]),
        ({"type": "Re-specs", "sql": "  "}, ["batch_execution_params.sql", "not blank"]),
    ],
)
def test_what_the_contract_and_the_parser_reject_names_source_and_field(
    raw: Any, words: list[str]
) -> None:
    with pytest.raises(InvalidFlowParams) as caught:
        parse_flow_params("src-1", raw)
    for word in words:
        assert word in str(caught.value)


def test_a_misspelt_flow_is_told_every_flow_there_is() -> None:
    # The allowed values come from the contract's description of the key
    for key in ("flow_type", "type"):
        with pytest.raises(InvalidFlowParams) as caught:
            parse_flow_params("src-1", {key: "Weekly"})
        for name in ALLOWED_FLOW_NAMES:
            assert repr(name) in str(caught.value)


@pytest.mark.parametrize(
    "params",
    [
        FlowParams(FlowType.NORMAL),
        FlowParams(FlowType.RESPECS, sql="UPDATE t SET a = 1"),
        FlowParams(FlowType.FULL_LOAD, reset_at=RUN_START),
        FlowParams(FlowType.SOLD, year=2021),
    ],
)
def test_the_params_sourceflow_writes_back_keep_their_contract(params: FlowParams) -> None:
    contracts.validate(params.canonical(), PARAMS_CONTRACT)
    assert parse_flow_params("s", params.canonical()) == params


def a_normal_window(cursor: datetime, **changes: Any) -> Window:
    return plan_window(
        "s",
        FlowParams(FlowType.NORMAL),
        cursor=cursor,
        run_start=RUN_START,
        backdate_days=30,
        **changes,
    )


def test_normal_window_overlaps_the_cursor_by_the_allowance_and_skew_up_to_run_start() -> None:
    cursor = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)
    window = a_normal_window(cursor, lateness_allowance=timedelta(minutes=10))
    assert (window.field, window.start, window.end) == (
        WindowField.LAST_MODIFIED,
        cursor - timedelta(minutes=10) - CLOCK_SKEW_ALLOWANCE - STAMP_RESOLUTION,
        RUN_START,
    )
    assert window.start_inclusive is False


def test_normal_window_never_starts_before_the_landed_versions_are_known() -> None:
    # After the allowance is raised, the window grows as runs go by: before landed_since the
    # versions already landed are not listed, so re-reading them would land them twice.
    cursor = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)
    landed_since = cursor - timedelta(minutes=5)
    window = a_normal_window(
        cursor, lateness_allowance=timedelta(hours=1), landed_since=landed_since
    )
    assert window.start == landed_since


def test_a_cursor_moved_back_by_hand_below_landed_since_is_a_reload_from_there() -> None:
    cursor = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)
    window = a_normal_window(
        cursor, lateness_allowance=timedelta(0), landed_since=cursor + timedelta(days=2)
    )
    assert window.start == cursor - CLOCK_SKEW_ALLOWANCE - STAMP_RESOLUTION


@pytest.mark.parametrize(
    ("allowance", "valid"),
    [
        (timedelta(0), True),
        (timedelta(minutes=10), True),
        (timedelta(days=1), True),
        (timedelta(seconds=-1), False),
        (timedelta(days=1, seconds=1), False),
    ],
)
def test_a_negative_or_absurd_allowance_is_refused_by_name(
    allowance: timedelta, valid: bool
) -> None:
    if valid:
        assert check_lateness_allowance("src-1", allowance) == allowance
        return
    with pytest.raises(InvalidSourceSetting) as caught:
        check_lateness_allowance("src-1", allowance)
    assert "'src-1'" in str(caught.value)
    assert "lateness_allowance" in str(caught.value)
    assert caught.value.error_name == "InvalidSourceSetting"


@pytest.mark.parametrize(
    ("after_end", "position"),
    [
        (timedelta(0), StampPosition.IN_WINDOW),
        (-timedelta(days=3), StampPosition.IN_WINDOW),
        (timedelta(microseconds=1), StampPosition.WAITING),
        (CLOCK_SKEW_ALLOWANCE, StampPosition.WAITING),
        (CLOCK_SKEW_ALLOWANCE + timedelta(microseconds=1), StampPosition.FUTURE),
    ],
)
def test_a_stamp_past_the_end_waits_within_the_skew_and_is_future_beyond(
    after_end: timedelta, position: StampPosition
) -> None:
    assert stamp_position(RUN_START, RUN_START + after_end) is position


def test_landed_since_follows_the_cursor_minus_the_overlap_and_never_goes_back() -> None:
    cursor = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)
    ten = timedelta(minutes=10)
    assert landed_since_after(None, cursor, ten) == cursor - overlap(ten)
    assert landed_since_after(None, None, ten) is None
    later = cursor + timedelta(hours=1)
    assert landed_since_after(later, cursor, ten) == later


def test_normal_without_cursor_is_backdated() -> None:
    window = plan_window(
        "s", FlowParams(FlowType.NORMAL), cursor=None, run_start=RUN_START, backdate_days=7
    )
    assert window.start == RUN_START - timedelta(days=7)
    assert window.end == RUN_START


def test_cursor_ahead_of_run_start_gives_an_empty_window_not_a_backwards_one() -> None:
    ahead = RUN_START + timedelta(hours=1)
    window = plan_window(
        "s", FlowParams(FlowType.NORMAL), cursor=ahead, run_start=RUN_START, backdate_days=7
    )
    assert window.start == window.end == RUN_START


def test_full_load_ignores_the_cursor_and_goes_back_backdate_days() -> None:
    window = plan_window(
        "s",
        FlowParams(FlowType.FULL_LOAD),
        cursor=datetime(2026, 11, 21, tzinfo=UTC),
        run_start=RUN_START,
        backdate_days=30,
    )
    assert (window.start, window.end, window.start_inclusive) == (
        RUN_START - timedelta(days=30),
        RUN_START,
        True,
    )


def test_respecs_window_starts_in_1990() -> None:
    window = plan_window(
        "s",
        FlowParams(FlowType.RESPECS, sql="UPDATE t SET a = 1"),
        cursor=None,
        run_start=RUN_START,
        backdate_days=30,
    )
    assert window.start == RESPECS_WINDOW_START == datetime(1990, 1, 1, tzinfo=UTC)
    assert window.field is WindowField.LAST_MODIFIED


def test_sold_window_filters_sold_date_from_first_of_january() -> None:
    window = plan_window(
        "s", FlowParams(FlowType.SOLD, year=2021), cursor=None, run_start=RUN_START, backdate_days=3
    )
    assert window.field is WindowField.SOLD_DATE
    assert window.start == datetime(2021, 1, 1, tzinfo=UTC)
    assert window.end == RUN_START


def test_sold_year_defaults_to_the_run_start_year_in_utc() -> None:
    # Given a run that starts on 1 January UTC, which is still 31 December in New York
    run_start = datetime(2027, 1, 1, 2, 0, tzinfo=UTC)
    window = plan_window(
        "s", FlowParams(FlowType.SOLD), cursor=None, run_start=run_start, backdate_days=3
    )
    assert window.start == datetime(2027, 1, 1, tzinfo=UTC)


def test_sold_year_after_the_run_start_is_rejected() -> None:
    with pytest.raises(InvalidFlowParams, match="year = 2030"):
        plan_window(
            "s",
            FlowParams(FlowType.SOLD, year=2030),
            cursor=None,
            run_start=RUN_START,
            backdate_days=3,
        )


def test_window_bounds_are_utc_whatever_zone_the_run_start_came_in() -> None:
    tokyo = RUN_START.astimezone(timezone(timedelta(hours=9)))
    window = plan_window(
        "s", FlowParams(FlowType.FULL_LOAD), cursor=None, run_start=tokyo, backdate_days=1
    )
    assert window.end == RUN_START and window.start == RUN_START - timedelta(days=1)


def test_naive_run_start_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_window(
            "s",
            FlowParams(FlowType.NORMAL),
            cursor=None,
            run_start=datetime(2026, 1, 1),
            backdate_days=1,
        )


@pytest.mark.parametrize(
    ("start_inclusive", "moment", "inside"),
    [
        (False, RUN_START - timedelta(days=1), False),  # the cursor itself was loaded before
        (True, RUN_START - timedelta(days=1), True),
        (False, RUN_START - timedelta(days=1, microseconds=-1), True),
        (False, RUN_START, True),  # the end is always inside
        (True, RUN_START + timedelta(microseconds=1), False),
    ],
)
def test_a_window_contains_what_its_bounds_say(
    start_inclusive: bool, moment: datetime, inside: bool
) -> None:
    window = Window(
        WindowField.LAST_MODIFIED, RUN_START - timedelta(days=1), RUN_START, start_inclusive
    )
    assert window.contains(moment) is inside


def test_first_run_rule_writes_full_load() -> None:
    assert is_first_run(1) and not is_first_run(2)
    assert parse_flow_params("s", FIRST_RUN_PARAMS).flow_type is FlowType.FULL_LOAD
    assert FIRST_RUN_PARAMS == {"type": "Full Load"}


def test_cursor_advances_to_newest_loaded_and_never_backwards() -> None:
    older, newer = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    assert advance_cursor(None, newer) == newer
    assert advance_cursor(older, newer) == newer
    assert advance_cursor(newer, older) == newer
    assert advance_cursor(older, None) == older
    assert advance_cursor(None, None) is None


def test_only_sold_and_backfills_leave_the_cursor_alone() -> None:
    assert {flow for flow in FlowType if not moves_cursor(flow)} == {
        FlowType.SOLD,
        FlowType.BACKFILL,
    }
