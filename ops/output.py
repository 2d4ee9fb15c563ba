"""How every `sourceflow` command prints: one JSON encoder (times ISO-8601 in UTC with `Z`),
table cells (times to the second, with their zone), tables that fit the terminal without ever
cutting a word (an id, a time), and the exit codes."""

from __future__ import annotations

import enum
import json
import shutil
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from shared.rules.limits import UnreadableJson
from shared.timefmt import isoformat, readable

# What `sourceflow` exits with (README, "Exit codes"): 2 is click's own, for a usage error.
EXIT_OK = 0
EXIT_FAILED = 1  # the command failed or was refused, a run failed, an audit found a gap
EXIT_USAGE = 2
EXIT_SKIPPED = 3  # `run --wait`: the run did nothing, on purpose (the source was locked, …)

# A word longer than this may be folded across lines; ids (execution names are at most 80
# characters) and times are shorter, so they never are.
LONGEST_UNBROKEN_WORD = 80
# The cells of a table row: a space either side of each cell, and a border before each.
_PADDING, _BORDER = 2, 1


# Every command's --json (a test walks the command tree: a command without it fails the suite).
json_option = click.option(
    "--json", "as_json", is_flag=True, help="One JSON document instead of a table."
)


def json_value(value: Any) -> Any:
    """What `json` cannot encode itself, as sourceflow's JSON shows it."""
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _duration(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, Path | UnreadableJson):
        return str(value)  # a stored JSON value too deep to read: `<unreadable: …>`
    raise TypeError(f"{type(value).__name__} {value!r} has no JSON form in sourceflow's output")


def to_json(document: Any, *, indent: int | None = 2) -> str:
    """One JSON document, as every `--json` prints it."""
    return json.dumps(document, indent=indent, default=json_value)


def echo_json(document: Any) -> None:
    click.echo(to_json(document))


def cell(value: Any) -> str:
    """A value as a table cell or a line for people show it: a time to the second with its
    zone (`2026-11-28 12:00:05Z`), a duration as `10m`, a mapping or list as compact JSON,
    nothing as nothing."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return readable(value)
    if isinstance(value, timedelta):
        return _duration(value)
    if isinstance(value, Mapping | list):
        return to_json(value, indent=None)
    return str(value)


def _duration(value: timedelta) -> str:
    """`10m`, `1h30m`: as `--lateness-allowance` and the sources file write a duration."""
    from shared.rules.source_settings import format_duration

    return format_duration(value)


def terminal_width() -> int:
    """The terminal's columns (COLUMNS when set; 80 when the output is not a terminal)."""
    return shutil.get_terminal_size().columns


def print_rows(
    rows: Sequence[Mapping[str, Any]],
    as_json: bool,
    title: str,
    columns: Sequence[str],
    *,
    counted: bool = True,
) -> None:
    """`rows` as a JSON list, or as a table of `columns` fitting the terminal."""
    if as_json:
        echo_json(list(rows))
        return
    from rich.console import Console

    width = terminal_width()
    Console(width=width).print(rows_table(title, rows, columns, counted=counted, width=width))


def rows_table(
    title: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    counted: bool = True,
    width: int | None = None,
) -> Any:
    """What every listing prints: a table of `columns` of `rows` (titled with their count
    unless not `counted`) within `width` (the terminal's) where no word is cut; when even
    that is too wide, each row as a block of `column  value` lines (as psql's \\x does)."""
    from rich.table import Table
    from rich.text import Text

    width = width or terminal_width()
    headers = [column.replace("_", " ") for column in columns]
    texts = [[cell(row.get(column)) for column in columns] for row in rows]
    heading = f"{title}: {len(rows)}" if counted else title
    widths = _column_widths(headers, [list(column) for column in zip(*texts, strict=True)], width)
    if widths is None:
        return _records(heading, headers, texts, width)
    table = Table(title=Text(heading), title_justify="left")
    for header, column_width in zip(headers, widths, strict=True):
        table.add_column(Text(header), width=column_width, overflow="fold")
    for row_texts in texts:  # as Text: a `[word]` in an error is shown, not read as markup
        table.add_row(*(Text(text) for text in row_texts))
    return table


def _column_widths(
    headers: Sequence[str], cells: Sequence[Sequence[str]], width: int
) -> list[int] | None:
    """Each column's width for a table `width` wide: as wide as its content where there is
    room, narrowed widest first but never below its longest word; None if that does not fit."""
    cells = cells or [[] for _ in headers]
    natural = [
        _longest([header, *texts], str.splitlines)
        for header, texts in zip(headers, cells, strict=True)
    ]
    least = [
        min(_longest([header, *texts], str.split), LONGEST_UNBROKEN_WORD)
        for header, texts in zip(headers, cells, strict=True)
    ]
    room = width - _BORDER - len(headers) * (_PADDING + _BORDER)
    if sum(least) > room:
        return None
    widths = list(natural)
    while sum(widths) > room:
        narrowable = [index for index, w in enumerate(widths) if w > least[index]]
        widths[max(narrowable, key=lambda index: widths[index])] -= 1
    return widths


def _longest(texts: Sequence[str], split: Any) -> int:
    """The widest part of `texts` split by `split` (into lines, or words)."""
    from rich.cells import cell_len

    return max((cell_len(part) for text in texts for part in split(text)), default=0)


def _records(
    heading: str, headers: Sequence[str], texts: Sequence[Sequence[str]], width: int
) -> Any:
    """One block per row, `column  value`, the values folded to the terminal's width."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    blocks: list[Any] = [Text(heading)]
    for number, row_texts in enumerate(texts, start=1):
        block = Table.grid(padding=(0, 2))
        block.add_column(no_wrap=True)
        block.add_column(overflow="fold")
        for header, text in zip(headers, row_texts, strict=True):
            block.add_row(Text(header), Text(text))
        blocks += [Text(f"─ {number} of {len(texts)}"), block]
    return Group(*blocks)


def run_exit_code(final_state: str | None) -> int:
    """What following a run exits with, by the state it ended in (None: it was not seen to
    end): a skip is not a failure, but says so."""
    if final_state == "SUCCEEDED":
        return EXIT_OK
    if final_state == "SKIPPED":
        return EXIT_SKIPPED
    return EXIT_FAILED
