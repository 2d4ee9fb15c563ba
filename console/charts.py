"""Runs over time as a chart: a lane per source, each run a bar from its start for its
duration, coloured by its status; and per source the figures beside it. Pure: runs in (as
`ops.runs.runs_list` gives them), shapes out; the page's template draws them as SVG."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.store.runs import RunStatus

LABEL_WIDTH = 180  # the source names' column
PLOT_WIDTH = 720
LANE_HEIGHT = 22
AXIS_HEIGHT = 22
MIN_BAR_WIDTH = 3  # a run of a second still shows
TICKS = 6  # time labels along the axis


@dataclass(frozen=True)
class Bar:
    run: str
    status: str
    x: float
    y: int
    width: float
    title: str  # what hovering it says


@dataclass(frozen=True)
class Lane:
    source_id: str
    y: int


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Timeline:
    lanes: tuple[Lane, ...]
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    width: int
    height: int
    plot_left: int


def timeline(runs: Iterable[Mapping[str, Any]], *, since: datetime, until: datetime) -> Timeline:
    listed = sorted(runs, key=lambda run: (run["source_id"], run["started_at"]))
    order = sorted({run["source_id"] for run in listed})
    lane_of = {source: AXIS_HEIGHT + index * LANE_HEIGHT for index, source in enumerate(order)}
    span = max((until - since).total_seconds(), 1.0)

    def x_of(moment: datetime) -> float:
        offset = min(max((moment - since).total_seconds(), 0.0), span)
        return LABEL_WIDTH + PLOT_WIDTH * offset / span

    bars = []
    for run in listed:
        start = x_of(run["started_at"])
        end = x_of(run["finished_at"] or until)
        bars.append(
            Bar(
                run=run["execution_name"],
                status=run["status"],
                x=round(start, 1),
                y=lane_of[run["source_id"]] + 3,
                width=round(max(end - start, MIN_BAR_WIDTH), 1),
                title=_title(run),
            )
        )
    ticks = tuple(
        Tick(
            round(LABEL_WIDTH + PLOT_WIDTH * i / (TICKS - 1), 1),
            (since + (until - since) * i / (TICKS - 1)).strftime("%m-%d %H:%M"),
        )
        for i in range(TICKS)
    )
    return Timeline(
        lanes=tuple(Lane(source, y) for source, y in lane_of.items()),
        bars=tuple(bars),
        ticks=ticks,
        width=LABEL_WIDTH + PLOT_WIDTH + 40,
        height=AXIS_HEIGHT + max(len(order), 1) * LANE_HEIGHT + 4,
        plot_left=LABEL_WIDTH,
    )


def _title(run: Mapping[str, Any]) -> str:
    duration = run["duration_seconds"]
    said = [
        run["execution_name"],
        run["status"],
        f"{run['records']} records" if run["records"] is not None else "no records yet",
        f"{duration:.1f} s" if duration is not None else "running",
    ]
    if run["error"]:
        said.append(f"{run['error']} in {run['failed_step']}")
    return ", ".join(said)


def per_source(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per source: runs, failures, records loaded, and the mean and longest duration."""
    by_source: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        by_source.setdefault(run["source_id"], []).append(run)
    rows = []
    for source_id, its_runs in sorted(by_source.items()):
        durations = [r["duration_seconds"] for r in its_runs if r["duration_seconds"] is not None]
        rows.append(
            {
                "source_id": source_id,
                "runs": len(its_runs),
                "failed": sum(r["status"] == RunStatus.FAILED for r in its_runs),
                "records": sum(r["records"] or 0 for r in its_runs),
                "mean_duration_seconds": (
                    round(sum(durations) / len(durations), 1) if durations else None
                ),
                "longest_duration_seconds": max(durations) if durations else None,
            }
        )
    return rows


@dataclass(frozen=True)
class SourceTotals:
    """One source's row of the totals chart: its records as a bar, its runs as a bar whose
    failed part is drawn apart."""

    source_id: str
    y: int
    records: int
    records_width: float
    runs: int
    runs_width: float
    failed: int
    failed_width: float


@dataclass(frozen=True)
class Totals:
    rows: tuple[SourceTotals, ...]
    width: int
    height: int
    plot_left: int
    half: int  # each bar's room: records on the left half, runs on the right


def totals(per_source_rows: Iterable[Mapping[str, Any]]) -> Totals:
    """Per source (as `per_source` gives them): records loaded and runs with their failures,
    each scaled to the largest."""
    rows = list(per_source_rows)
    half = PLOT_WIDTH // 2 - 20
    most_records = max((row["records"] for row in rows), default=0) or 1
    most_runs = max((row["runs"] for row in rows), default=0) or 1
    return Totals(
        rows=tuple(
            SourceTotals(
                source_id=row["source_id"],
                y=AXIS_HEIGHT + index * LANE_HEIGHT,
                records=row["records"],
                records_width=round(half * row["records"] / most_records, 1),
                runs=row["runs"],
                runs_width=round(half * row["runs"] / most_runs, 1),
                failed=row["failed"],
                failed_width=round(half * row["failed"] / most_runs, 1),
            )
            for index, row in enumerate(rows)
        ),
        width=LABEL_WIDTH + PLOT_WIDTH + 120,  # room for "12 (3 failed)" past the longest bar
        height=AXIS_HEIGHT + max(len(rows), 1) * LANE_HEIGHT + 4,
        plot_left=LABEL_WIDTH,
        half=half,
    )
