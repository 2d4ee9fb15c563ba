"""The README's walk-through ("Operating sourceflow: a walk-through"), played command by command
on the embedded stack, as a new operator would type it in the directory where `sourceflow up`
runs: if a command of it stops working, or the README stops saying what works, this fails."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from local.stack import LocalStack
from tests.e2e.harness import WAIT_SECONDS

README = Path(__file__).parents[2] / "README.md"
# The fenced block after the marker that names this test.
WALKTHROUGH = re.compile(
    r"<!-- walkthrough: tests/e2e/test_readme_walkthrough.py plays this block -->\n"
    r"```sh\n(?P<block>.*?)```",
    re.S,
)
# What `sourceflow run` prints, and where the walk-through uses what it printed.
REQUESTED = re.compile(r"execution (?P<execution>\S+)")
EXECUTION = "<execution>"


def walkthrough_commands() -> list[str]:
    """The block's commands, each joined across its continuation lines; comments left out."""
    found = WALKTHROUGH.search(README.read_text())
    assert found, "README.md has no walk-through block marked for this test"
    commands, pending = [], ""
    for line in found["block"].splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        commands.append(pending + line)
        pending = ""
    assert not pending, f"the walk-through ends inside a command: {pending!r}"
    return commands


def type_in(
    directory: Path, environment: dict[str, str], lines: list[str]
) -> subprocess.CompletedProcess[str]:
    """`lines` typed into one shell in `directory`."""
    return subprocess.run(
        ["bash", "-c", "\n".join(lines)],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )


def test_the_readme_walkthrough_works_command_by_command(stack: LocalStack, tmp_path: Path) -> None:
    # Given a directory where the stack's state is `.sourceflow`, as after `sourceflow up` there,
    # and the project's commands on PATH
    (tmp_path / ".sourceflow").symlink_to(stack.options.state_dir)
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    commands = walkthrough_commands()
    assert commands[0].startswith("set -a; . .sourceflow/local.env")
    setup = [command for command in commands if not command.startswith("sourceflow ")]

    # When each command is typed in turn, after the lines that set up the shell
    said: dict[str, str] = {}
    execution = None
    for command in commands[len(setup) :]:
        if EXECUTION in command:
            assert execution, f"{command!r} needs the execution an earlier command printed"
            command = command.replace(EXECUTION, execution)
        typed = type_in(tmp_path, environment, [*setup, command])
        # Then every one of them works
        assert typed.returncode == 0, (command, typed.stdout, typed.stderr)
        assert "Traceback" not in typed.stdout + typed.stderr, command
        said[command.split("#")[0].strip()] = typed.stdout
        if (requested := REQUESTED.search(typed.stdout)) and command.startswith("sourceflow run "):
            execution = requested["execution"]

    # And what they said is what the walk-through promises: the run succeeded and landed records,
    # its steps are shown, and the pause said why
    assert execution is not None
    shown = type_in(tmp_path, environment, [*setup, f"sourceflow runs show {execution} --json"])
    run = json.loads(shown.stdout)
    assert run["run"]["status"] == "succeeded", run["run"]
    assert run["run"]["records"] > 0
    statuses = {step["step"]: step["status"] for step in run["steps"]}
    assert (statuses["Validate"], statuses["Download"]) == ("succeeded", "succeeded"), statuses
    assert execution in said[f"sourceflow runs show {execution}"]
    assert "vendor outage" in said["sourceflow sources show shop-listings"]
