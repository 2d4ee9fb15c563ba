"""The state machine as a picture: each state of an `.asl.json` definition placed on a layer
(its longest path from StartAt, loops set aside), each transition a curve between two boxes.
A workflow's tasks are drawn the same way (`workflow_graph`): each task a box, each edge a
curve of its kind (success, failure, completion).

Pure: a definition in, boxes and curves out. The page's template draws them as SVG (escaped
like every other value it renders) and colours each box by the status the run gave its state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The drawing's measures, in SVG user units.
BOX_WIDTH = 176
BOX_HEIGHT = 30
COLUMN_GAP = 18
ROW_GAP = 34
MARGIN = 12


# Where a state may go next, and how (a curve's kind): `transitions` for an ASL definition.
EdgesOf = Callable[[Mapping[str, Any]], Iterator[tuple[str, str]]]


@dataclass(frozen=True)
class Box:
    state: str
    kind: str  # the ASL Type: Task, Choice, Pass, Succeed, Fail, ...
    x: int
    y: int

    @property
    def centre_x(self) -> int:
        return self.x + BOX_WIDTH // 2


@dataclass(frozen=True)
class Curve:
    source: str
    target: str
    kind: str  # next, choice (a Choice's branch or Default) or catch (an error's way out)
    path: str  # the SVG path's `d`


@dataclass(frozen=True)
class Drawing:
    boxes: tuple[Box, ...]
    curves: tuple[Curve, ...]
    width: int
    height: int
    box_width: int = BOX_WIDTH
    box_height: int = BOX_HEIGHT


def transitions(state: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Where a state may go next, and how: its Next, a Choice's branches and Default, and each
    Catch's way out (a target named twice, once)."""
    seen = set()
    found = [(state.get("Next"), "next"), (state.get("Default"), "choice")]
    found += [(choice.get("Next"), "choice") for choice in state.get("Choices", ())]
    found += [(catch.get("Next"), "catch") for catch in state.get("Catch", ())]
    for target, kind in found:
        if target and target not in seen:
            seen.add(target)
            yield target, kind


def workflow_graph(tasks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A workflow definition's tasks as a definition `draw` takes with `edges_of=task_edges`:
    each task a state of its kind, leading to the tasks after it."""
    states: dict[str, Any] = {task["name"]: {"Type": task["kind"], "Edges": []} for task in tasks}
    for task in tasks:
        for edge in task.get("after", ()):
            before, on = (edge, "success") if isinstance(edge, str) else (edge["task"], edge["on"])
            states[before]["Edges"].append((task["name"], on))
    return {"StartAt": tasks[0]["name"], "States": states}


def task_edges(state: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    yield from state["Edges"]


def layers(definition: Mapping[str, Any], edges_of: EdgesOf = transitions) -> dict[str, int]:
    """Each state's layer: the length of its longest path from StartAt once the transitions
    that loop back (to a state still being visited from StartAt) are set aside. A state no
    path reaches sits on layer 0."""
    states: Mapping[str, Any] = definition["States"]
    order: list[str] = []  # states by the time their visit ended: reversed, a topological order
    back_edges: set[tuple[str, str]] = set()
    visiting: set[str] = set()
    visited: set[str] = set()

    def visit(name: str) -> None:
        visiting.add(name)
        for target, _ in edges_of(states[name]):
            if target not in states:
                continue
            if target in visiting:
                back_edges.add((name, target))
            elif target not in visited:
                visit(target)
        visiting.discard(name)
        visited.add(name)
        order.append(name)

    for name in [definition["StartAt"], *states]:
        if name in states and name not in visited:
            visit(name)
    layer = dict.fromkeys(states, 0)
    for name in reversed(order):
        for target, _ in edges_of(states[name]):
            if target in states and (name, target) not in back_edges:
                layer[target] = max(layer[target], layer[name] + 1)
    return layer


def draw(definition: Mapping[str, Any], edges_of: EdgesOf = transitions) -> Drawing:
    """Boxes row by row, a layer a row, each row centred and ordered by where the boxes leading
    into it stand (the mean of their centres: fewer crossings), and a curve for each transition:
    down from a box's bottom to the next one's top, or, going back up, round the right side."""
    states: Mapping[str, Any] = definition["States"]
    layer_of = layers(definition, edges_of)
    rows: dict[int, list[str]] = {}
    for name in states:
        rows.setdefault(layer_of[name], []).append(name)
    sources_of: dict[str, list[str]] = {name: [] for name in states}
    for name in states:
        for target, _ in edges_of(states[name]):
            if target in states and layer_of[target] > layer_of[name]:
                sources_of[target].append(name)
    widest = max(len(row) for row in rows.values())
    width = 2 * MARGIN + widest * BOX_WIDTH + (widest - 1) * COLUMN_GAP
    boxes: dict[str, Box] = {}
    for number, row in sorted(rows.items()):
        row.sort(key=lambda name: _mean_centre(sources_of[name], boxes))
        row_width = len(row) * BOX_WIDTH + (len(row) - 1) * COLUMN_GAP
        left = (width - row_width) // 2
        y = MARGIN + number * (BOX_HEIGHT + ROW_GAP)
        for index, name in enumerate(row):
            x = left + index * (BOX_WIDTH + COLUMN_GAP)
            boxes[name] = Box(name, str(states[name]["Type"]), x, y)
    curves = tuple(
        Curve(name, target, kind, _path(boxes[name], boxes[target]))
        for name in states
        for target, kind in edges_of(states[name])
        if target in boxes
    )
    height = 2 * MARGIN + (max(rows) + 1) * (BOX_HEIGHT + ROW_GAP) - ROW_GAP
    return Drawing(tuple(boxes.values()), curves, width, height)


def _mean_centre(names: list[str], boxes: Mapping[str, Box]) -> float:
    """Where the boxes already placed among `names` stand on average (0 when none is)."""
    placed = [boxes[name].centre_x for name in names if name in boxes]
    return sum(placed) / len(placed) if placed else 0.0


def _path(source: Box, target: Box) -> str:
    if target.y > source.y:
        start_y, end_y = source.y + BOX_HEIGHT, target.y
        bend = (end_y - start_y) // 2
        return (
            f"M{source.centre_x},{start_y} C{source.centre_x},{start_y + bend} "
            f"{target.centre_x},{end_y - bend} {target.centre_x},{end_y}"
        )
    # Back up (a loop) or across a row: out of the right side, round, into the right side.
    start_x, end_x = source.x + BOX_WIDTH, target.x + BOX_WIDTH
    start_y, end_y = source.y + BOX_HEIGHT // 2, target.y + BOX_HEIGHT // 2
    reach = max(start_x, end_x) + COLUMN_GAP
    return f"M{start_x},{start_y} C{reach},{start_y} {reach},{end_y} {end_x},{end_y}"
