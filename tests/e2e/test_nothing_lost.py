"""Nothing lost, end to end (DESIGN.md, "The data guarantee"; issue 14).

A vendor whose records become visible a few seconds after their stamp, that stamps whole seconds
while it is written continuously, whose clock runs 30 s behind or ahead of the runs' clock, or
that holds a record dated 9999-12-31: with Normal runs back to back, every record version the
vendor stored lands in the raw zone exactly once; each run's counters (late records, duplicates
skipped, future-dated records) are exactly what its raw output and the runs before it imply; the
cursor never passes a run's window end; and nothing alerts.

Each test gathers every finding before it fails, so that a failure reports all the figures
(how many versions were lost, which counters were wrong) at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import pytest

from shared.rules.flows import CLOCK_SKEW_ALLOWANCE
from shared.timefmt import isoformat, parse_iso
from tests.builders import listing
from tests.e2e.harness import WAIT_SECONDS, Harness, RunResult, Vendor

DAY = timedelta(days=1)
FAR_FUTURE = "9999-12-31T23:59:59Z"
# Bounds of each test: seconds of writing while Normal runs go back to back, and runs in all.
WRITE_SECONDS = 5.0
CONTINUOUS_WRITE_SECONDS = 10.0
MAX_RUNS = 80
# However slow the machine, the writer writes through at least this many runs, and in the
# cases of late records until one record is surely late, for at most this much longer.
MIN_RUNS = 3
SLOW_MACHINE_S = 30.0
WRITE_EVERY_S = 0.05
# A version is a record's key and its last-modified stamp, as the vendor serves them.
Version = tuple[str, str]


def version_of(record: Mapping[str, Any]) -> Version:
    return str(record["id"]), str(record["last_modified"])


def stamp(version: Version) -> datetime:
    return parse_iso(version[1])


class Writer:
    """Upserts new records into a vendor dataset from a thread until stopped, and keeps every
    version the vendor stored, with the moment before which it was surely not visible; the
    vendor stamps them, in whole seconds of the dataset's clock.

    Each tick writes one record visible at once and, with `late_by_s`, one more that becomes
    visible only that many seconds after its stamp. Every record has a new id, so no version
    is ever replaced before a run could read it.
    """

    def __init__(
        self, vendor: Vendor, dataset: str, *, late_by_s: int = 0, clock_offset_s: int = 0
    ) -> None:
        self.vendor, self.dataset = vendor, dataset
        self.late_by_s, self.clock_offset_s = late_by_s, clock_offset_s
        # Each version, and the moment (epoch seconds) before which it was surely not visible.
        self.hidden_until: dict[Version, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failure: Exception | None = None
        self._thread = threading.Thread(target=self._write, name=f"writer-{dataset}", daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=WAIT_SECONDS)
        assert not self._thread.is_alive(), f"the writer of {self.dataset} did not stop"
        if self._failure is not None and exc is None:
            raise AssertionError(f"the writer of {self.dataset} failed") from self._failure

    def written(self) -> dict[Version, float]:
        """What it wrote so far (it may be writing still)."""
        with self._lock:
            return dict(self.hidden_until)

    def settled_at(self) -> float:
        """When (epoch seconds, the runs' clock) every version written is visible at the vendor
        and stamped in the past: a run started later may load all of them."""
        newest = max(stamp(v).timestamp() for v in self.hidden_until)
        return max(newest, *self.hidden_until.values()) + 1.0

    def _write(self) -> None:
        try:
            # Bounded in count as well as by the stop signal.
            for tick in range(int(120 / WRITE_EVERY_S)):
                if self._stop.is_set():
                    return
                self._put(f"{self.dataset}-w{tick:05d}", 0)
                if self.late_by_s:
                    self._put(f"{self.dataset}-l{tick:05d}", self.late_by_s)
                self._stop.wait(WRITE_EVERY_S)
        except Exception as exc:  # reported by __exit__, in the test's thread
            self._failure = exc

    def _put(self, record_id: str, visible_after_s: int) -> None:
        asked = time.time()
        stored = self.vendor.put(
            self.dataset, [{"id": record_id, "price": 100_000}], visible_after_s=visible_after_s
        )
        for record in stored:
            version = version_of(record)
            # Visible `visible_after_s` after its stamp by the dataset's clock, and never
            # before it was asked for.
            shown = stamp(version).timestamp() - self.clock_offset_s + visible_after_s
            with self._lock:
                self.hidden_until[version] = max(asked, shown)


def new_vendor_source(harness: Harness, records: Iterable[Mapping[str, Any]] = ()) -> Source:
    """A dataset of its own holding a record a day old (and `records`), and a Normal source of
    it that never ran: its first run is a Normal run over the backdated window."""
    dataset = harness.unique_name()
    source_id = harness.new_source(dataset, runtime_count=2, params={"flow_type": "Normal"})
    source = Source(harness, source_id, dataset)
    source.put([listing(dataset, 0, datetime.now(UTC) - DAY), *records])
    return source


@dataclass
class Source:
    harness: Harness
    source_id: str
    dataset: str
    # Every version written, and the moment (epoch seconds) before which it was surely not
    # visible: when its upsert was asked for, or later if it was visible only late.
    hidden_until: dict[Version, float] = field(default_factory=dict)
    runs: list[RunResult] = field(default_factory=list)

    def put(self, records: list[Mapping[str, Any]]) -> None:
        asked = time.time()
        for record in self.harness.vendor.put(self.dataset, records):
            self.hidden_until[version_of(record)] = asked

    def run(self) -> RunResult:
        result = self.harness.run(self.source_id)
        self.runs.append(result)
        return result

    def run_back_to_back(self, keep_going: Callable[[], bool]) -> None:
        while keep_going() and len(self.runs) < MAX_RUNS:
            self.run()

    def run_while_writing(self, writer: Writer, seconds: float, *, until_late: bool) -> None:
        """Normal runs back to back while `writer` writes for `seconds` (and, however slow the
        machine, for MIN_RUNS runs and, `until_late`, until a record is surely late, within
        SLOW_MACHINE_S more), on until every version it wrote is visible and stamped in the
        past, and one more after that."""
        deadline = time.monotonic() + seconds

        def keep_going() -> bool:
            now = time.monotonic()
            if now < deadline or now > deadline + SLOW_MACHINE_S:
                return now < deadline
            return len(self.runs) < MIN_RUNS or (
                until_late and not self.surely_late(writer.written())
            )

        with writer:
            self.run_back_to_back(keep_going)
        self.hidden_until.update(writer.hidden_until)
        settled = writer.settled_at()
        self.run_back_to_back(lambda: time.time() < settled)
        time.sleep(max(0.0, settled - time.time()))
        self.run()

    def surely_late(self, written: Mapping[Version, float] | None = None) -> set[Version]:
        """The versions (of `written`, default all) that became visible only after a run whose
        cursor passed their stamp had finished: the run that lands them starts from a cursor at
        or after their stamp, so they are late records, whatever the machine's speed."""
        passed = [
            (result.run["cursor_after"], result.run["finished_at"].timestamp())
            for result in self.runs
            if result.run.get("status") == "succeeded" and result.run["cursor_after"] is not None
        ]
        return {
            version
            for version, since in (self.hidden_until if written is None else written).items()
            if any(stamp(version) <= cursor and finished < since for cursor, finished in passed)
        }

    def summary(self) -> str:
        ended = [r.run for r in self.runs if r.run.get("finished_at")]
        took = sorted((run["finished_at"] - run["started_at"]).total_seconds() for run in ended)
        late = sum(run.get("late_records") or 0 for run in ended)
        skipped = sum(run.get("duplicates_skipped") or 0 for run in ended)
        spread = f" of {took[0]:.1f}-{took[-1]:.1f} s" if took else ""
        return (
            f"{len(self.hidden_until)} versions, {len(self.runs)} Normal runs{spread}, "
            f"{len(self.surely_late())} surely late; late_records {late}, "
            f"duplicates_skipped {skipped}"
        )

    def assert_late_records_counted(self) -> None:
        """Late records were produced (else this machine ran too slowly for the case: skip,
        saying so), and the runs counted each of them."""
        late = self.surely_late()
        print(self.summary())
        if not late:
            # The runs were too slow for a record to fall behind a cursor on its own: write one
            # stamped at the last cursor, visible only now, so the case is exercised all the same.
            cursor = self.runs[-1].run["cursor_after"]
            self.put([{"id": f"{self.dataset}-late", "last_modified": isoformat(cursor)}])
            self.run()
            late = self.surely_late()
        assert late, f"no record was late ({self.summary()})"
        assert sum(result.run["late_records"] for result in self.runs) >= len(late)


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def assert_none(self, what: str) -> None:
        assert not self.problems, f"{what}:\n  " + "\n  ".join(self.problems)


def some(items: Iterable[Any], most: int = 4) -> str:
    """The first few items, in their order."""
    listed = list(items)
    return ", ".join(map(str, listed[:most])) + (", …" if len(listed) > most else "")


def assert_exactly_once(source: Source) -> list[dict[str, Any]]:
    """Asserts 0 lost, 0 duplicated, every counter right and no false alert over the source's
    Normal runs, against every version written; returns the runs' manifests. A run that did
    not succeed is a finding too; the others are judged all the same."""
    harness, runs, findings = source.harness, source.runs, Findings()
    written = set(source.hidden_until)

    succeeded = []
    for number, result in enumerate(runs, 1):
        ok = result.status == "SUCCEEDED" and result.run.get("status") == "succeeded"
        findings.check(
            ok,
            f"run {number} ended {result.status} ({result.error}), ledger "
            f"{result.run.get('status')} in {result.run.get('failed_step')}: "
            f"{result.run.get('error')} {result.run.get('error_detail')}",
        )
        findings.check(result.run.get("flow_type") == "normal", f"run {number} not Normal")
        if ok:
            succeeded.append((number, result, harness.raw_output(result)))

    landed = Counter(version_of(r) for _, _, (_, records) in succeeded for r in records)
    lost = written - set(landed)
    findings.check(
        not lost,
        f"lost {len(lost)} of {len(written)} versions over {len(runs)} Normal runs "
        f"({len(lost & source.surely_late())} of them surely late): {some(sorted(lost))}",
    )
    twice = {v: n for v, n in landed.items() if n > 1}
    findings.check(
        not twice,
        f"{len(twice)} of {len(written)} versions landed more than once: "
        f"{some(sorted(twice.items()))}",
    )
    unknown = set(landed) - written
    findings.check(not unknown, f"{len(unknown)} versions landed that nobody wrote")

    wrong: dict[str, list[str]] = {}
    landed_before: set[Version] = set()
    for number, result, (manifest, records) in succeeded:
        for counter, problem in counter_problems(result.run, manifest, records, landed_before):
            wrong.setdefault(counter, []).append(f"run {number}: {problem}")
        landed_before.update(version_of(record) for record in records)
    for counter, problems in wrong.items():
        findings.check(
            False, f"{counter} wrong in {len(problems)} of {len(runs)} runs: {some(problems, 3)}"
        )

    # No false alert: no Run Failed, no alert, no execution other than these, all SUCCEEDED
    arns = {result.execution_arn for result in runs}
    events = harness.outcome_events(arns)
    kinds = Counter(event["detail-type"] for event in events.values())
    findings.check(
        kinds == Counter({"Run Succeeded": len(runs)}),
        f"outcome events {dict(kinds)}, expected {len(runs)} Run Succeeded",
    )
    findings.check(not harness.alerts_about(source.source_id), "an alert names the source")
    executions = Counter(e["status"] for e in harness.executions_of(source.source_id))
    findings.check(
        executions == Counter({"SUCCEEDED": len(runs)}),
        f"executions {dict(executions)}, expected {len(runs)} SUCCEEDED",
    )
    findings.assert_none(f"{source.source_id}: not exactly once ({source.summary()})")
    return [manifest for _, _, (manifest, _) in succeeded]


def counter_problems(
    run: Mapping[str, Any],
    manifest: Mapping[str, Any],
    records: list[dict[str, Any]],
    landed_before: set[Version],
) -> Iterable[tuple[str, str]]:
    """What the run's ledger row and manifest say wrongly, given the run's raw output and what
    earlier runs landed: its counters, what it landed, and where its cursor went."""
    start, end, cursor_before = run["window_start"], run["window_end"], run["cursor_before"]

    def after_start(moment: datetime) -> bool:
        return moment >= start if run["window_start_inclusive"] else moment > start

    def future(moment: datetime) -> bool:
        return moment > end + CLOCK_SKEW_ALLOWANCE

    here = [version_of(record) for record in records]
    # The vendor serves every version stamped after the window's start that is visible: all
    # that earlier runs landed are among them, and a stamp just past the window's end waits.
    again = [
        v for v in landed_before if after_start(stamp(v)) and (stamp(v) <= end or future(stamp(v)))
    ]
    expected = {
        "late_records": sum(
            1 for v in here if cursor_before is not None and stamp(v) <= cursor_before
        ),
        "duplicates_skipped": len(again),
        "future_records": sum(1 for v in [*here, *again] if future(stamp(v))),
    }
    for name, count in expected.items():
        in_manifest = manifest.get(name)
        if isinstance(in_manifest, dict):
            in_manifest = in_manifest.get("count")
        if run.get(name) != count or in_manifest != count:
            yield name, f"ledger {run.get(name)}, manifest {in_manifest}, expected {count}"
    outside = [
        v for v in here if not (after_start(stamp(v)) and stamp(v) <= end) and not future(stamp(v))
    ]
    if outside:
        yield "landed outside the window", some(outside, 2)
    in_window = [stamp(v) for v in [*here, *again] if stamp(v) <= end]
    cursor = max([*in_window, *([cursor_before] if cursor_before else [])], default=None)
    if run["cursor_after"] != cursor or (cursor is not None and cursor > end):
        yield "cursor_after", f"{run['cursor_after']}, expected {cursor} (window end {end})"


# --- the cases ---------------------------------------------------------------------------------


@pytest.mark.parametrize("late_by_s", [1, 2, 5])
def test_records_visible_late_by_seconds_land_exactly_once(
    harness: Harness, late_by_s: int
) -> None:
    # Given a vendor written continuously, half its records visible only late_by_s after their
    # stamp (a partner's transaction stamped when it began), with Normal runs back to back
    source = new_vendor_source(harness)
    writer = Writer(harness.vendor, source.dataset, late_by_s=late_by_s)

    # When the writer stops, everything it wrote is visible, and one more run goes
    source.run_while_writing(writer, WRITE_SECONDS, until_late=True)

    # Then every version landed exactly once, the runs counting the late ones
    assert_exactly_once(source)
    source.assert_late_records_counted()


@pytest.mark.parametrize("clock_offset_s", [0, -30])
def test_a_continuous_whole_second_writer_loses_nothing(
    harness: Harness, clock_offset_s: int
) -> None:
    # Given a vendor stamping whole seconds by a clock on time or 30 s behind the runs', written
    # every 50 ms while Normal runs go back to back: a run reads in the middle of the second
    # its cursor stops on, and more records come with that same stamp afterwards
    source = new_vendor_source(harness)
    harness.vendor.set_clock(source.dataset, clock_offset_s)
    writer = Writer(harness.vendor, source.dataset, clock_offset_s=clock_offset_s)

    source.run_while_writing(writer, CONTINUOUS_WRITE_SECONDS, until_late=True)

    # Then the overlap re-reads them: landed once, counted late, the re-reads skipped
    assert_exactly_once(source)
    assert sum(result.run["duplicates_skipped"] for result in source.runs) > 0
    source.assert_late_records_counted()


def test_a_vendor_clock_30_seconds_ahead_loses_nothing(harness: Harness) -> None:
    # Given a vendor whose clock is 30 s ahead of the runs', written continuously
    source = new_vendor_source(harness)
    harness.vendor.set_clock(source.dataset, 30)
    writer = Writer(harness.vendor, source.dataset, clock_offset_s=30)

    # When Normal runs go back to back until the runs' clock has passed the last stamp
    source.run_while_writing(writer, WRITE_SECONDS, until_late=False)

    # Then the records stamped after a run's window end (within the skew allowance) waited for
    # a later window, and every version landed exactly once
    manifests = assert_exactly_once(source)
    print(source.summary())
    assert sum(manifest["waiting_records"] for manifest in manifests) > 0
    assert all(result.run["future_records"] == 0 for result in source.runs)


def test_a_record_dated_9999_lands_once_and_never_moves_the_cursor(harness: Harness) -> None:
    # Given a vendor that holds one record stamped 9999-12-31T23:59:59Z
    source = new_vendor_source(harness, [{"id": "far-future", "last_modified": FAR_FUTURE}])

    # When the source runs, the vendor gets new records, and it runs again, twice
    first = source.run()
    for batch in (["fresh-1", "fresh-2"], ["fresh-3"]):
        source.put([{"id": record_id} for record_id in batch])
        source.run()

    # Then the record landed once, each run counted it as future-dated, the manifests describe
    # it, and the cursor stayed at the newest record in the window, so the later ones landed
    manifests = assert_exactly_once(source)
    assert [result.run["future_records"] for result in source.runs] == [1, 1, 1]
    assert all(FAR_FUTURE in " ".join(m["future_records"]["examples"]) for m in manifests)
    assert first.run["cursor_after"] < first.run["window_end"]
    assert all(result.run["cursor_after"].year < 9999 for result in source.runs)
