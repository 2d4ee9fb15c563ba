"""The state machine drawn from its definition: every state a box on the layer of its longest
path from StartAt (loops set aside), every transition a curve; and the runs' charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from console.api import definition_drawn
from console.charts import LABEL_WIDTH, PLOT_WIDTH, timeline, totals
from console.graph import BOX_HEIGHT, draw, layers, task_edges, transitions, workflow_graph


def a_definition(**states: dict[str, Any]) -> dict[str, Any]:
    return {"StartAt": next(iter(states)), "States": states}


def test_each_state_sits_below_every_state_that_leads_to_it() -> None:
    # Given A → B → C, and A → C directly
    definition = a_definition(
        A={"Type": "Choice", "Choices": [{"Next": "C"}], "Default": "B"},
        B={"Type": "Pass", "Next": "C"},
        C={"Type": "Succeed"},
    )
    # Then C is on the layer after B's, not beside it
    assert layers(definition) == {"A": 0, "B": 1, "C": 2}


def test_a_loop_back_does_not_push_its_target_down() -> None:
    # Given a download that continues: Download → More → Continue → Download
    definition = a_definition(
        Download={"Type": "Task", "Next": "More"},
        More={"Type": "Choice", "Choices": [{"Next": "Continue"}], "Default": "Done"},
        Continue={"Type": "Pass", "Next": "Download"},
        Done={"Type": "Succeed"},
    )
    found = layers(definition)
    assert found["Download"] == 0
    assert found["Continue"] == found["Done"] == 2
    # and the loop's curve goes back up, round the side
    curve = next(c for c in draw(definition).curves if c.source == "Continue")
    assert (curve.target, curve.kind) == ("Download", "next")


def test_transitions_name_next_choices_default_and_catches_once_each() -> None:
    state = {
        "Type": "Task",
        "Next": "Ok",
        "Catch": [{"ErrorEquals": ["A"], "Next": "Bad"}, {"ErrorEquals": ["B"], "Next": "Bad"}],
    }
    assert list(transitions(state)) == [("Ok", "next"), ("Bad", "catch")]


def test_a_workflow_s_tasks_are_drawn_each_below_the_tasks_it_runs_after() -> None:
    tasks: list[dict[str, Any]] = [
        {"name": "check", "kind": "sql"},
        {"name": "a", "kind": "ingest", "after": ["check"]},
        {"name": "b", "kind": "ingest", "after": ["check"]},
        {
            "name": "recover",
            "kind": "sql",
            "when": "any",
            "after": [{"task": "a", "on": "failure"}, {"task": "b", "on": "completion"}],
        },
    ]
    graph = workflow_graph(tasks)

    drawing = draw(graph, task_edges)

    assert layers(graph, task_edges) == {"check": 0, "a": 1, "b": 1, "recover": 2}
    assert {(c.source, c.target, c.kind) for c in drawing.curves} == {
        ("check", "a", "success"),
        ("check", "b", "success"),
        ("a", "recover", "failure"),
        ("b", "recover", "completion"),
    }
    assert {box.state: box.kind for box in drawing.boxes}["recover"] == "sql"


def test_the_project_state_machine_is_drawn_whole_without_overlaps() -> None:
    definition = definition_drawn()
    drawing = draw(definition)
    # every state once, every transition between two drawn states
    assert sorted(box.state for box in drawing.boxes) == sorted(definition["States"])
    expected = sum(len(list(transitions(s))) for s in definition["States"].values())
    assert len(drawing.curves) == expected
    # no two boxes on one spot, every box inside the picture
    spots = {(box.x, box.y) for box in drawing.boxes}
    assert len(spots) == len(drawing.boxes)
    assert all(box.x >= 0 and box.y + BOX_HEIGHT <= drawing.height for box in drawing.boxes)
    # the run's way through reads top to bottom
    y = {box.state: box.y for box in drawing.boxes}
    assert y["Validate"] < y["Approve"] < y["Download"] < y["UnlockAfterSuccess"] < y["Succeeded"]


def test_the_totals_scale_each_source_to_the_largest_and_draw_its_failures_apart() -> None:
    rows = [
        {"source_id": "a", "runs": 4, "failed": 1, "records": 100},
        {"source_id": "b", "runs": 2, "failed": 0, "records": 25},
    ]
    a, b = totals(rows).rows
    assert a.records_width == 4 * b.records_width
    assert a.runs_width == 2 * b.runs_width == 4 * a.failed_width
    assert b.failed_width == 0 and b.y > a.y


def test_a_timeline_bar_starts_when_its_run_did_and_lasts_as_long() -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC)
    run = {
        "execution_name": "r1",
        "source_id": "a",
        "status": "failed",
        "started_at": since + timedelta(days=1),
        "finished_at": since + timedelta(days=2),
        "records": None,
        "duration_seconds": 86_400.0,
        "error": "SourceRequestRejected",
        "failed_step": "Download",
    }
    drawn = timeline([run], since=since, until=since + timedelta(days=4))
    [bar] = drawn.bars
    assert (bar.x, bar.width) == (LABEL_WIDTH + PLOT_WIDTH / 4, PLOT_WIDTH / 4)
    assert "SourceRequestRejected in Download" in bar.title
