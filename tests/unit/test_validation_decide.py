"""services.validation.domain.decide: whether a run goes ahead, with which window and lease."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.validation.domain import Run, Skip, SourceNotFound, SourceRow, decide
from shared.connectors.base import UnsupportedSourceType
from shared.errors import RunCancelled
from shared.rules.backfills import BackfillRange, BackfillStatus, SliceRun
from shared.rules.flows import (
    DEFAULT_LATENESS_ALLOWANCE,
    FlowParams,
    FlowType,
    InvalidFlowParams,
    InvalidSourceSetting,
    Window,
    WindowField,
    overlap,
)
from shared.rules.redrives import RedrivenRun
from shared.rules.respecs import InvalidRespecsQuery

NOW = datetime(2026, 11, 22, 18, 41, 57, tzinfo=UTC)
LEASE = timedelta(minutes=30)
ME = "arn:aws:states:eu-west-1:123456789012:execution:sourceflow-run:acme-listings-me"
OTHER = "arn:aws:states:eu-west-1:123456789012:execution:sourceflow-run:acme-listings-other"
CURSOR = datetime(2026, 11, 21, 18, 40, 2, tzinfo=UTC)


def a_source(**changes: Any) -> SourceRow:
    source = SourceRow(
        source_id="acme-listings",
        source_type="http_api",
        connection={"base_url": "https://api.vendor.example", "dataset": "listings"},
        is_active=True,
        batch_execution_params={"flow_type": "Normal"},
        last_modified_date=CURSOR,
        runtime_count=5,
        backdate_days=30,
        locked_by=None,
        lock_expires_at=None,
    )
    return replace(source, **changes)


def decide_for(
    source: SourceRow | None,
    backfill: SliceRun | None = None,
    redrive: RedrivenRun | None = None,
) -> Skip | Run:
    return decide(
        source,
        source_id="acme-listings",
        execution_arn=ME,
        now=NOW,
        lease=LEASE,
        respecs_tables=frozenset({"public.listing_attributes"}),
        backfill=backfill,
        redrive=redrive,
    )


def run_of(source: SourceRow) -> Run:
    outcome = decide_for(source)
    assert isinstance(outcome, Run), outcome
    return outcome


def test_an_unknown_source_is_not_found_by_id() -> None:
    with pytest.raises(SourceNotFound, match="'acme-listings'") as caught:
        decide_for(None)
    assert caught.value.error_name == "SourceNotFound"


def test_an_inactive_source_is_skipped() -> None:
    outcome = decide_for(a_source(is_active=False))
    assert isinstance(outcome, Skip)
    assert outcome.reason == "SourceInactive"


def test_a_source_locked_by_another_execution_is_skipped_naming_the_holder() -> None:
    # Given another execution holds a lease that has not expired
    source = a_source(locked_by=OTHER, lock_expires_at=NOW + timedelta(minutes=5))
    # When validation decides
    outcome = decide_for(source)
    # Then the run is skipped and the detail says who holds the lock
    assert isinstance(outcome, Skip)
    assert outcome.reason == "SourceLocked"
    assert OTHER in outcome.detail


@pytest.mark.parametrize("expired_by", [timedelta(0), timedelta(seconds=1), timedelta(days=1)])
def test_an_expired_lease_of_another_execution_is_taken_over(expired_by: timedelta) -> None:
    source = a_source(locked_by=OTHER, lock_expires_at=NOW - expired_by)
    run = run_of(source)
    assert run.lock_expires_at == NOW + LEASE


def test_a_lock_this_execution_already_holds_lets_it_run() -> None:
    # Given a redelivery: this execution took the lock on an earlier delivery
    source = a_source(locked_by=ME, lock_expires_at=NOW + timedelta(minutes=20))
    # Then it still runs, with a fresh lease
    assert run_of(source).lock_expires_at == NOW + LEASE


def test_inactive_wins_over_locked() -> None:
    source = a_source(is_active=False, locked_by=OTHER, lock_expires_at=NOW + timedelta(minutes=5))
    outcome = decide_for(source)
    assert isinstance(outcome, Skip)
    assert outcome.reason == "SourceInactive"


def test_bad_params_fail_the_run_without_running_it() -> None:
    with pytest.raises(InvalidFlowParams, match=re.escape("batch_execution_params.type")) as caught:
        decide_for(a_source(batch_execution_params={"type": "Weekly"}))
    assert caught.value.error_name == "InvalidFlowParams"


def test_an_unsupported_source_type_fails_naming_the_type() -> None:
    with pytest.raises(UnsupportedSourceType, match="'ftp'"):
        decide_for(a_source(source_type="ftp"))


def test_the_first_run_is_a_full_load_over_the_backdate_days() -> None:
    # Given a source that has never run
    run = run_of(a_source(runtime_count=0, backdate_days=30))
    # Then this run is its first, it rewrites the params to Full Load
    assert run.runtime_count == 1
    assert run.params_to_write == {"type": "Full Load"}
    assert run.params.flow_type is FlowType.FULL_LOAD
    # And it loads the last backdate_days, start included
    assert run.window == Window(WindowField.LAST_MODIFIED, NOW - timedelta(days=30), NOW, True)


def test_a_later_normal_run_loads_from_the_cursor_and_keeps_the_params() -> None:
    # Given a source on its sixth run with Normal params and a cursor
    run = run_of(a_source(runtime_count=5))
    # Then it loads (cursor - allowance - skew, now] and writes no params back
    assert run.runtime_count == 6
    assert run.params.flow_type is FlowType.NORMAL
    start = CURSOR - overlap(DEFAULT_LATENESS_ALLOWANCE)
    assert run.window == Window(WindowField.LAST_MODIFIED, start, NOW, False)
    assert run.params_to_write is None


def test_the_lease_expires_one_lease_after_now() -> None:
    assert run_of(a_source()).lock_expires_at == NOW + LEASE


def test_a_negative_lateness_allowance_fails_validation_by_name() -> None:
    # Given a source whose allowance was set negative by hand
    source = a_source(lateness_allowance=-timedelta(minutes=5))
    # Then validation refuses it, naming the source and the column, before anything is locked
    with pytest.raises(InvalidSourceSetting) as caught:
        decide_for(source)
    assert "'acme-listings'" in str(caught.value)
    assert "public.source.lateness_allowance" in str(caught.value)


def test_a_normal_window_never_starts_before_landed_since() -> None:
    landed_since = CURSOR - timedelta(minutes=1)
    run = run_of(a_source(landed_since=landed_since))
    assert run.window.start == landed_since


# -- a backfill's slice --------------------------------------------------------------------------

SLICE_START = datetime(2026, 3, 2, tzinfo=UTC)
THREE_DAYS = BackfillRange(
    WindowField.LAST_MODIFIED,
    SLICE_START - timedelta(days=1),
    SLICE_START + timedelta(days=2),
    timedelta(days=1),
)


def a_slice(status: BackfillStatus = BackfillStatus.ACTIVE, number: int = 2) -> SliceRun:
    return SliceRun(backfill_id=7, status=status, wanted=THREE_DAYS, slice_number=number)


def test_a_slice_loads_its_own_window_and_leaves_the_params_and_count_alone() -> None:
    # Given a Sold source (its special flow) whose execution was started for slice 2 of 3
    source = a_source(batch_execution_params={"type": "Sold", "year": 2021}, runtime_count=5)
    outcome = decide_for(source, a_slice())
    # Then it runs slice 2, [2 March, 3 March), as a backfill
    assert isinstance(outcome, Run)
    assert outcome.params.flow_type is FlowType.BACKFILL
    assert outcome.window == Window(
        WindowField.LAST_MODIFIED, SLICE_START, SLICE_START + timedelta(days=1), True, True
    )
    # And the source's runtime count and params stay what they are, the lock is taken as usual
    assert (outcome.runtime_count, outcome.params_to_write) == (5, None)
    assert outcome.lock_expires_at == NOW + LEASE


def test_a_slice_is_never_a_first_run_nor_refused_for_the_sources_params() -> None:
    # Given a source that never ran, with params validation would refuse
    source = a_source(runtime_count=0, last_modified_date=None, batch_execution_params={"x": 1})
    outcome = decide_for(source, a_slice(number=1))
    # Then the slice runs without the first-run rule (the Normal timeline's first run stays)
    assert isinstance(outcome, Run)
    assert (outcome.runtime_count, outcome.params_to_write) == (0, None)
    assert outcome.window.start == THREE_DAYS.start


def test_a_slice_of_a_busy_or_inactive_source_is_skipped_like_any_run() -> None:
    locked = a_source(locked_by=OTHER, lock_expires_at=NOW + timedelta(minutes=5))
    inactive = a_source(is_active=False)
    for source, reason in ((locked, "SourceLocked"), (inactive, "SourceInactive")):
        outcome = decide_for(source, a_slice())
        assert isinstance(outcome, Skip) and outcome.reason == reason


def test_a_slice_of_a_cancelled_backfill_ends_cancelled() -> None:
    with pytest.raises(RunCancelled, match="backfill 7 of source 'acme-listings' is cancelled"):
        decide_for(a_source(), a_slice(BackfillStatus.CANCELLED))


# -- a redrive's new run (`sourceflow redrive`) -------------------------------------------------

FAILED_WINDOW = Window(WindowField.LAST_MODIFIED, CURSOR - timedelta(days=1), CURSOR, False)


def redrive_of(params: FlowParams) -> RedrivenRun:
    return RedrivenRun("acme-listings-failed", params, FAILED_WINDOW)


def test_a_redrive_loads_the_failed_window_with_the_failed_flow_whatever_the_params_say() -> None:
    # Given a source whose params changed since its run failed, and whose cursor moved on
    source = a_source(batch_execution_params={"flow_type": "Sold"}, last_modified_date=NOW)

    decided = decide_for(source, redrive=redrive_of(FlowParams(FlowType.NORMAL)))

    # Then the new run loads the failed run's window as a Normal run, and counts as a run
    assert isinstance(decided, Run)
    assert (decided.params, decided.window) == (FlowParams(FlowType.NORMAL), FAILED_WINDOW)
    assert (decided.runtime_count, decided.params_to_write) == (6, None)


def test_a_redriven_first_run_is_not_a_first_run_again() -> None:
    decided = decide_for(
        a_source(runtime_count=1), redrive=redrive_of(FlowParams(FlowType.FULL_LOAD))
    )
    assert isinstance(decided, Run) and decided.params_to_write is None


def test_a_redrive_of_a_respecs_run_checks_its_query_again() -> None:
    query = "UPDATE public.accounts SET x = 1 WHERE id = 2"
    with pytest.raises(InvalidRespecsQuery, match=r"public\.accounts"):
        decide_for(a_source(), redrive=redrive_of(FlowParams(FlowType.RESPECS, sql=query)))


def test_a_redrive_of_a_busy_source_is_skipped_like_any_run() -> None:
    busy = a_source(locked_by=OTHER, lock_expires_at=NOW + LEASE)
    decided = decide_for(busy, redrive=redrive_of(FlowParams(FlowType.NORMAL)))
    assert isinstance(decided, Skip) and decided.reason == "SourceLocked"
