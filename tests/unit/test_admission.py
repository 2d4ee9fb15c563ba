"""The admission rule (shared/rules/admission.py): as many runs under way as downloads can run
at once, the oldest waiting first; and, over any interleaving of requests, steps and run ends,
no download waits for a worker, no run starts twice, and every run starts."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.rules.admission import InvalidAdmission, admission_capacity, runs_to_admit

# --- admission_capacity -----------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 2, 10, 1000])
def test_the_capacity_is_the_number_of_downloads_that_run_at_once(concurrency: int) -> None:
    assert admission_capacity(concurrency, 1) == concurrency


def test_no_download_at_once_is_refused_by_name() -> None:
    with pytest.raises(InvalidAdmission, match=r"download concurrency 0.*MaximumConcurrency"):
        admission_capacity(0, 1)


@pytest.mark.parametrize("batch_size", [0, 2, 10])
def test_a_download_batch_of_other_than_one_message_is_refused_with_the_fix(
    batch_size: int,
) -> None:
    with pytest.raises(InvalidAdmission, match="set the download function's BatchSize to 1"):
        admission_capacity(10, batch_size)


# --- runs_to_admit ----------------------------------------------------------------------------


def test_with_nothing_under_way_the_oldest_runs_fill_every_place() -> None:
    assert runs_to_admit(["a", "b", "c", "d"], under_way=0, capacity=2) == ["a", "b"]


def test_with_every_place_taken_nothing_starts() -> None:
    assert runs_to_admit(["a", "b"], under_way=2, capacity=2) == []


def test_runs_started_outside_the_scheduler_past_the_capacity_start_nothing_more() -> None:
    assert runs_to_admit(["a"], under_way=5, capacity=2) == []


def test_a_short_line_starts_whole() -> None:
    assert runs_to_admit(["a"], under_way=0, capacity=10) == ["a"]


@given(
    waiting=st.lists(st.integers(), max_size=30),
    under_way=st.integers(min_value=0, max_value=40),
    capacity=st.integers(min_value=1, max_value=20),
)
def test_admitted_runs_are_the_oldest_and_never_past_the_capacity(
    waiting: list[int], under_way: int, capacity: int
) -> None:
    admitted = runs_to_admit(waiting, under_way=under_way, capacity=capacity)
    assert admitted == waiting[: len(admitted)]
    assert under_way + len(admitted) <= max(capacity, under_way)
    # as many as fit: either the line is empty now, or every place is taken
    assert len(admitted) == len(waiting) or under_way + len(admitted) >= capacity


# --- the protocol, as a model -----------------------------------------------------------------

# A run goes through these phases; only "downloading" needs a download worker, and a run holds
# its place in admission until its download is recorded (shared/store/admission.py).
PHASES = ("validating", "downloading", "unlocking")
HOLDING = ("validating", "downloading")


@dataclass
class Model:
    """The scheduler's line and the runs under way, on a stack with `workers` download workers
    (one message each): every request, run end and tick is followed by an admission pass, as
    the scheduler's handler does."""

    workers: int
    line: deque[int] = field(default_factory=deque)
    running: dict[int, str] = field(default_factory=dict)
    queued: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)

    @property
    def capacity(self) -> int:
        return admission_capacity(self.workers, 1)

    def request(self, runs: int) -> None:
        for _ in range(runs):
            run = len(self.queued)
            self.queued.append(run)
            self.line.append(run)
        self.admit()

    def admit(self) -> None:
        for run in runs_to_admit(list(self.line), under_way=self.holding(), capacity=self.capacity):
            self.line.popleft()
            self.started.append(run)
            self.running[run] = PHASES[0]

    def step(self, index: int) -> None:
        """One run moves to its next phase, or ends (and its end is announced)."""
        if not self.running:
            return
        run = sorted(self.running)[index % len(self.running)]
        phase = PHASES.index(self.running[run])
        if phase + 1 < len(PHASES):
            self.running[run] = PHASES[phase + 1]
            # Its download message is sent now: a worker must be free to take it at once.
            assert self.in_phase("downloading") <= self.workers, "a download waits in its queue"
        else:
            del self.running[run]
            self.admit()

    def holding(self) -> int:
        return sum(self.in_phase(phase) for phase in HOLDING)

    def in_phase(self, phase: str) -> int:
        return sum(each == phase for each in self.running.values())

    def check(self) -> None:
        assert self.holding() <= self.capacity
        assert len(set(self.started)) == len(self.started), "a run started twice"
        assert self.started == self.queued[: len(self.started)], "not the oldest first"


EVENTS = st.one_of(
    st.tuples(st.just("request"), st.integers(min_value=1, max_value=12)),
    st.tuples(st.just("step"), st.integers(min_value=0, max_value=50)),
    st.tuples(st.just("tick"), st.just(0)),
)


@given(workers=st.integers(min_value=1, max_value=5), events=st.lists(EVENTS, max_size=80))
def test_no_download_waits_no_run_starts_twice_and_every_run_starts(
    workers: int, events: list[tuple[str, int]]
) -> None:
    model = Model(workers)
    for kind, value in events:
        if kind == "request":
            model.request(value)
        elif kind == "step":
            model.step(value)
        else:
            model.admit()
        model.check()

    # When the runs under way go on to their ends, each end announced
    while model.running:
        model.step(0)
        model.check()

    # Then every run asked for started, once, oldest first, and none waits any more
    assert model.started == model.queued
    assert not model.line
