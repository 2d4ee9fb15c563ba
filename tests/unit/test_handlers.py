"""Every services/<name>/handler.py is wiring only (STYLE.md): settings, cached ports and the task
table in at most 40 lines, and no decision or closure of its own.

The rule counted: every line of the file that is not blank, its docstring, imports and comments
included. The handlers are read as source, not imported (a handler reads its settings from the
environment when it is imported).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"
HANDLERS = sorted(SERVICES.glob("*/handler.py"))
MAX_LINES = 40
# Statements that decide or loop, and functions made inside functions: a handler that needs one
# is doing its service's work (download's lease renewal closure lives in its service).
NOT_WIRING = (ast.If, ast.IfExp, ast.For, ast.While, ast.Try, ast.With, ast.Match, ast.Lambda)


def counted_lines(source: str) -> list[str]:
    return [line for line in source.splitlines() if line.strip()]


def service_of(handler: Path) -> str:
    return handler.parent.name


def test_every_service_has_a_handler() -> None:
    assert {service_of(handler) for handler in HANDLERS} == {
        "validation",
        "download",
        "unlocking",
        "scheduler",
        "tasks",
    }


@pytest.mark.parametrize("handler", HANDLERS, ids=service_of)
def test_a_handler_is_at_most_forty_lines(handler: Path) -> None:
    lines = counted_lines(handler.read_text(encoding="utf-8"))
    assert len(lines) <= MAX_LINES, f"{handler} has {len(lines)} lines that are not blank"


@pytest.mark.parametrize("handler", HANDLERS, ids=service_of)
def test_a_handler_decides_nothing_and_builds_no_closure(handler: Path) -> None:
    module = ast.parse(handler.read_text(encoding="utf-8"))
    found = [
        f"line {node.lineno}: {type(node).__name__}"
        for node in ast.walk(module)
        if isinstance(node, NOT_WIRING)
        or (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node not in module.body)
    ]
    assert found == []


def test_blank_lines_are_the_only_ones_left_out() -> None:
    source = '"""Doc."""\n\nimport os\n\n\n# note\nx = 1\n   \ny = 2\n'
    assert counted_lines(source) == ['"""Doc."""', "import os", "# note", "x = 1", "y = 2"]
