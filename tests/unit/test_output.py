"""How the operator's command prints: every command takes --json, JSON times are ISO-8601 in
UTC with Z, table cells say their zone, tables fit the terminal without cutting an id, the exit
codes, and one line (never a traceback) for each misconfiguration found before any socket."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from rich.console import Console

from ops.cli import _add_plugin_commands, main
from ops.output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SKIPPED,
    cell,
    rows_table,
    run_exit_code,
    to_json,
)
from shared.rules.limits import UnreadableJson
from shared.store.runs import RunStatus

MOMENT = datetime(2026, 11, 28, 12, 0, 5, 250000, tzinfo=UTC)


def leaf_commands(
    group: click.Group, path: str = "sourceflow"
) -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from leaf_commands(command, f"{path} {name}")
        else:
            yield f"{path} {name}", command


def test_every_command_takes_json() -> None:
    # Given the operator's command with the embedded stack's commands (up, demo, tick)
    _add_plugin_commands()
    # When every leaf command of its tree is looked at, Then each takes --json
    commands = dict(leaf_commands(main))
    assert {"sourceflow cancel", "sourceflow tick", "sourceflow up", "sourceflow whoami"} <= set(
        commands
    )
    lacking = [
        path
        for path, command in commands.items()
        if not any("--json" in getattr(option, "opts", ()) for option in command.params)
    ]
    assert lacking == []


def test_json_times_are_iso_8601_in_utc_with_z() -> None:
    in_paris = MOMENT.astimezone(timezone(timedelta(hours=1)))
    document = {
        "at": MOMENT,
        "paris": in_paris,
        "day": date(2026, 11, 28),
        "records": Decimal("3001"),
        "seconds": Decimal("1.5"),
        "lateness_allowance": timedelta(minutes=90),
        "status": RunStatus.SKIPPED,
        "nested": [{"at": MOMENT}],
    }
    assert json.loads(to_json(document)) == {
        "at": "2026-11-28T12:00:05.250000Z",
        "paris": "2026-11-28T12:00:05.250000Z",
        "day": "2026-11-28",
        "records": 3001,
        "seconds": 1.5,
        "lateness_allowance": "90m",
        "status": "skipped",
        "nested": [{"at": "2026-11-28T12:00:05.250000Z"}],
    }


def test_a_stored_value_too_deep_to_read_says_so_in_json() -> None:
    # A source row written before migration 0012's bounds is read back as UnreadableJson
    # (`sourceflow sources show --json` of it ended in a TypeError traceback)
    unreadable = UnreadableJson("nested deeper than 32 levels")
    assert json.loads(to_json({"params": unreadable})) == {
        "params": "<unreadable: nested deeper than 32 levels>"
    }


def test_json_refuses_a_value_it_has_no_form_for_instead_of_guessing() -> None:
    with pytest.raises(TypeError, match="no JSON form"):
        to_json({"x": object()})


def test_a_time_cell_says_its_zone() -> None:
    assert cell(MOMENT) == "2026-11-28 12:00:05Z"
    assert cell(MOMENT.astimezone(timezone(timedelta(hours=-5)))) == "2026-11-28 12:00:05Z"
    assert cell(timedelta(hours=2)) == "2h"
    assert cell(None) == "" and cell({"type": "SOLD"}) == '{"type": "SOLD"}'


SOURCE_IDS = ["demo-listings-hourly", "partner-drops-acme-listings", "warehouse-sold-2026"]


def runs_like_the_ledger() -> list[dict[str, Any]]:
    return [
        {
            "execution_name": f"{source_id}-20261128T120000Z-req1a2b3c4d",
            "source_id": source_id,
            "flow_type": "Normal",
            "status": "failed",
            "window_start": MOMENT,
            "window_end": MOMENT + timedelta(hours=1),
            "records": 3001,
            "error": "SourceUnreachable: the vendor answered 503 Service Unavailable three "
            "times in a row; see `sourceflow logs --run` for each attempt",
        }
        for source_id in SOURCE_IDS
    ]


def printed(rows: list[dict[str, Any]], width: int, *, counted: bool = True) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(rows_table("runs", rows, list(rows[0]), width=width, counted=counted))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 120, 200])
def test_a_table_fits_the_terminal_and_never_cuts_an_id(width: int) -> None:
    rows = runs_like_the_ledger()
    text = printed(rows, width)
    assert max(len(line) for line in text.splitlines()) <= width
    for row in rows:
        assert row["source_id"] in text and row["execution_name"] in text
        assert "2026-11-28 12:00:05Z" in text
    assert "…" not in text


def test_a_table_too_wide_for_the_terminal_is_printed_a_row_at_a_time() -> None:
    # Given rows whose ids alone are wider than 80 columns side by side
    rows = runs_like_the_ledger()
    # When printed at 80 columns, Then each row is a block of `column  value` lines
    text = printed(rows, 80)
    assert "─ 1 of 3" in text and "execution name  " in text
    # and at 200 it is a table
    assert "┃ execution name" in printed(rows, 200)


def test_a_listing_is_titled_with_its_count_and_a_record_with_its_name() -> None:
    rows: list[dict[str, Any]] = [
        {"field": "source_id", "value": "demo-listings"},
        {"field": "is_active", "value": True},
    ]
    assert printed(rows, 120).startswith("runs: 2")
    assert printed(rows, 120, counted=False).splitlines()[0].rstrip() == "runs"


def test_a_table_of_nothing_is_its_title_and_headers() -> None:
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(rows_table("runs", [], ["source_id", "status"], width=80))
    assert console.export_text().startswith("runs: 0")


def test_a_skip_is_not_a_failure_but_says_so() -> None:
    assert run_exit_code("SUCCEEDED") == EXIT_OK
    assert run_exit_code("SKIPPED") == EXIT_SKIPPED != EXIT_FAILED
    assert {run_exit_code(state) for state in ("FAILED", "ABORTED", "TIMED_OUT", None)} == {
        EXIT_FAILED
    }


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(main, ["--version"])
    assert (
        result.exit_code == 0 and result.output == f"sourceflow, version {version('sourceflow')}\n"
    )


# -- one line for each misconfiguration ---------------------------------------------------------

# What the environment may hold that would configure the command; each case sets its own.
CONFIGURING = (
    "DATABASE_URL",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "SOURCEFLOW_CREDENTIALS",
)


def one_line_error(tmp_path: Path, args: list[str], **environment: str) -> str:
    """Run `sourceflow ARGS` with a state dir of nothing and `environment` only; assert it
    exits 1 with one line on stderr and no traceback; return that line."""
    _add_plugin_commands()
    env: dict[str, str | None] = dict.fromkeys(CONFIGURING)
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-config")
    env.update(environment)
    result = CliRunner().invoke(main, [*args, "--state-dir", str(tmp_path / "state")], env=env)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ")
    return line


def test_no_aws_region_is_one_line_naming_it_and_the_fix(tmp_path: Path) -> None:
    line = one_line_error(tmp_path, ["tick"])
    assert "no AWS region" in line and "AWS_DEFAULT_REGION" in line and "sourceflow up" in line


def test_no_stack_state_is_one_line_naming_what_is_missing(tmp_path: Path) -> None:
    line = one_line_error(tmp_path, ["sources", "list"])
    assert "DATABASE_URL is not set" in line and "sourceflow up" in line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read it"),
        ('DATABASE_URL="postgresql://alice@db/sourceflow\n', "quote each value"),
        ("# nothing here\n", "has no DATABASE_URL"),
    ],
    ids=["missing", "unterminated-quote", "no-login"],
)
def test_a_bad_credentials_file_is_one_line_naming_it(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    credentials = tmp_path / "alice.env"
    if content is not None:
        credentials.write_text(content)
    line = one_line_error(tmp_path, ["whoami"], SOURCEFLOW_CREDENTIALS=str(credentials))
    assert str(credentials) in line and expected in line


def test_a_broken_aws_config_file_is_one_line_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "aws-config"
    broken.write_text("region = nowhere\n[default\n")
    line = one_line_error(
        tmp_path, ["tick"], AWS_CONFIG_FILE=str(broken), AWS_SHARED_CREDENTIALS_FILE=str(broken)
    )
    assert str(broken) in line and "AWS_CONFIG_FILE" in line
