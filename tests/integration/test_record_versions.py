"""Each record version lands once across overlapping Normal windows (DESIGN.md, "The data
guarantee"): validation, download and unlocking against the real PostgreSQL, with a source that
reads its windows as the connectors do (past the end of a last-modified window)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.unlocking.service import unlock_run
from shared.connectors.base import InvalidConnection
from shared.rules.flows import (
    CLOCK_SKEW_ALLOWANCE,
    DEFAULT_LATENESS_ALLOWANCE,
    STAMP_RESOLUTION,
    InvalidSourceSetting,
    overlap,
)
from shared.store.db import Database, fetch_one
from shared.store.sources import get_source
from tests.builders import Execution, record
from tests.fakes import FakeConnector, FakeSink, WindowedSource
from tests.integration.conftest import (
    RESPECS,
    MakeSource,
    NewExecution,
    download,
    run_row,
    validate,
)


@dataclass
class Source:
    """One registered source, its records at the source, and the runs made of it."""

    db: Database
    source_id: str
    new_execution: NewExecution
    at_source: WindowedSource = field(default_factory=WindowedSource)
    landed: list[tuple[str, str]] = field(default_factory=list)
    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def write(self, key: int, stamp: datetime) -> None:
        self.at_source.items.append(record(key, stamp))

    def run(self, *, fail: bool = False) -> dict[str, Any]:
        """One run to its end; returns its ledger row. The versions of succeeded runs count
        as landed."""
        execution = self.new_execution(self.source_id)
        validated = validate(self.db, execution)
        assert validated["decision"] == "run", validated
        sink = FakeSink()
        download(self.db, execution, validated["plan"], self.at_source, sink)
        request = execution.unlock_failed() if fail else execution.unlock_succeeded()
        unlock_run(request, db=self.db, respecs=RESPECS)
        row = run_row(self.db, execution.arn)
        assert row is not None
        if row["status"] == "succeeded":
            self.landed += [
                (r["id"], r["last_modified"]) for part in sink.parts.values() for r in part
            ]
            # As the scheduler does once a special flow has succeeded
            with self.db.transaction() as cur:
                cur.execute(
                    "UPDATE public.source SET batch_execution_params = NULL WHERE source_id = %s",
                    (self.source_id,),
                )
        return row

    def listed_versions(self) -> int:
        with self.db.transaction() as cur:
            counted = fetch_one(
                cur,
                "SELECT count(*) AS n FROM public.landed_version WHERE source_id = %s",
                (self.source_id,),
            )
        assert counted is not None
        return int(counted["n"])


@pytest.fixture
def source(db: Database, make_source: MakeSource, new_execution: NewExecution) -> Source:
    # runtime count 0: the first run is the backdated Full Load
    return Source(db, make_source(runtime_count=0), new_execution)


def test_a_late_record_is_landed_by_the_next_run_and_nothing_is_landed_twice(
    source: Source,
) -> None:
    # Given a first run that landed two records
    source.write(1, source.now - timedelta(minutes=5))
    source.write(2, source.now - timedelta(minutes=1))
    first = source.run()
    assert (first["flow_type"], first["records"]) == ("full_load", 2)
    # And a record that became visible after that run, stamped before its cursor
    source.write(3, source.now - timedelta(minutes=3))

    # When the next Normal run goes
    second = source.run()

    # Then it landed the late record only, counted it, and skipped the two it met again
    assert second["flow_type"] == "normal"
    assert second["window_start"] == first["cursor_after"] - overlap(DEFAULT_LATENESS_ALLOWANCE)
    assert (second["records"], second["late_records"], second["duplicates_skipped"]) == (1, 1, 2)
    assert second["cursor_after"] == first["cursor_after"] == source.now - timedelta(minutes=1)
    # And every version is in the raw zone once
    assert sorted(source.landed) == sorted(
        (r["id"], r["last_modified"]) for r in source.at_source.items
    )


def test_the_versions_of_a_failed_run_are_landed_by_the_next_one(source: Source) -> None:
    source.write(1, source.now - timedelta(minutes=5))
    source.run()
    # Given a run that downloaded a new version and then failed
    source.write(1, source.now - timedelta(minutes=2))
    failed = source.run(fail=True)
    assert (failed["status"], failed["records"]) == ("failed", 1)

    # When the next run goes
    after = source.run()

    # Then it lands the version the failed run had downloaded
    assert (after["records"], after["duplicates_skipped"]) == (1, 1)
    assert len(source.landed) == 2 == len(set(source.landed))


def test_a_future_dated_record_lands_once_and_never_moves_the_cursor(source: Source) -> None:
    source.write(1, source.now - timedelta(minutes=5))
    source.write(2, datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))

    first = source.run()
    second = source.run()

    # Both runs met it and counted it; the first landed it, the second skipped it
    assert (first["records"], first["future_records"]) == (2, 1)
    assert (second["records"], second["future_records"], second["duplicates_skipped"]) == (
        0,
        1,
        2,
    )
    # And the cursor followed only the record inside the window
    assert first["cursor_after"] == second["cursor_after"] == source.now - timedelta(minutes=5)
    assert len(source.landed) == 2 == len(set(source.landed))


def test_a_record_stamped_just_after_the_window_end_waits_for_a_later_window(
    source: Source,
) -> None:
    # Given a record stamped by a clock running a few seconds ahead (within the skew allowance)
    ahead = datetime.now(UTC) + timedelta(seconds=3)
    source.write(1, ahead)
    # When a run goes before the record's stamp
    first = source.run()
    assert first["window_end"] < ahead
    # Then it neither lands nor counts it, and the cursor stays
    assert (first["records"], first["future_records"], first["cursor_after"]) == (0, 0, None)
    # And the first run after its stamp lands it
    time.sleep(max(0.0, (ahead - datetime.now(UTC)).total_seconds()) + 0.01)
    second = source.run()
    assert (second["records"], second["future_records"], second["cursor_after"]) == (1, 0, ahead)
    assert ahead - CLOCK_SKEW_ALLOWANCE < first["window_end"]


def test_only_versions_a_later_window_reads_stay_listed(db: Database, source: Source) -> None:
    for key in range(5):
        source.write(key, source.now - timedelta(days=2, minutes=key))  # long before the cursor
    source.write(10, source.now - timedelta(minutes=1))
    source.write(11, datetime(9999, 1, 1, tzinfo=UTC))

    run = source.run()

    # Then only the version within the overlap of the cursor and the future one stay listed
    allowance = run["lateness_allowance"]
    landed_since = get_source(db, source.source_id)["landed_since"]  # type: ignore[index]
    assert landed_since == run["cursor_after"] - overlap(allowance)
    assert (run["records"], source.listed_versions()) == (7, 2)


def test_a_raised_allowance_widens_the_window_only_as_far_as_versions_are_listed(
    db: Database, source: Source
) -> None:
    source.write(1, source.now - timedelta(minutes=30))
    source.write(2, source.now - timedelta(minutes=1))
    first = source.run()
    # Given the allowance raised to an hour after a run
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET lateness_allowance = interval '1 hour' WHERE source_id = %s",
            (source.source_id,),
        )

    second = source.run()

    # Then the window starts where the listed versions start, and nothing lands twice
    assert second["window_start"] == first["cursor_after"] - overlap(DEFAULT_LATENESS_ALLOWANCE)
    assert second["lateness_allowance"] == timedelta(hours=1)
    assert (second["records"], second["duplicates_skipped"]) == (0, 1)
    assert len(source.landed) == len(set(source.landed)) == 2


def test_the_default_allowance_is_the_columns_default(
    db: Database, make_source: MakeSource
) -> None:
    source = get_source(db, make_source())
    assert source is not None
    assert source["lateness_allowance"] == DEFAULT_LATENESS_ALLOWANCE


def test_a_redelivered_unlock_keeps_the_listed_versions(db: Database, source: Source) -> None:
    source.write(1, datetime.now(UTC) - timedelta(minutes=1))
    run = source.run()
    execution = Execution(source.source_id, run["execution_name"])
    again = unlock_run(execution.unlock_failed(), db=db, respecs=RESPECS)
    assert again["status"] == "succeeded"
    assert source.listed_versions() == 1


def test_a_key_field_that_no_record_has_fails_the_download_by_name(
    db: Database, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    source_id = make_source(runtime_count=0)
    execution = new_execution(source_id)
    plan = validate(db, execution)["plan"]
    connector = FakeConnector(
        [record(1, datetime.now(UTC) - timedelta(minutes=1))], key_field="listing_id"
    )
    with pytest.raises(InvalidConnection) as caught:
        download(db, execution, plan, connector, sink)
    assert f"source {source_id!r}" in str(caught.value)
    assert "'listing_id'" in str(caught.value)
    # And nothing was recorded: the run is still running, its cursor untouched
    row = run_row(db, execution.arn)
    assert row is not None
    assert (row["status"], row["records"]) == ("running", None)


def test_a_negative_allowance_fails_validation_by_name_and_changes_nothing(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> None:
    source_id = make_source(runtime_count=3, cursor=datetime.now(UTC) - timedelta(hours=1))
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET lateness_allowance = interval '-5 minutes'"
            " WHERE source_id = %s",
            (source_id,),
        )
    before = get_source(db, source_id)

    with pytest.raises(InvalidSourceSetting) as caught:
        validate(db, new_execution(source_id))

    assert f"source {source_id!r}" in str(caught.value)
    assert "public.source.lateness_allowance" in str(caught.value)
    assert get_source(db, source_id) == before  # not counted, not locked


def test_an_allowance_of_zero_is_kept_as_zero(db: Database, source: Source) -> None:
    # Given a source known not to write late (allowance 0)
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET lateness_allowance = interval '0' WHERE source_id = %s",
            (source.source_id,),
        )
    source.write(1, source.now - timedelta(minutes=1))
    run = source.run()
    # Then only the clock-skew allowance (and a stamp's second) is kept before the cursor, not
    # the default's overlap
    landed_since = get_source(db, source.source_id)["landed_since"]  # type: ignore[index]
    assert run["lateness_allowance"] == timedelta(0)
    assert landed_since == run["cursor_after"] - CLOCK_SKEW_ALLOWANCE - STAMP_RESOLUTION
