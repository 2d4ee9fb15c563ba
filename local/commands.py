"""The embedded stack's commands of `sourceflow`: `up`, `demo` and `tick`. The operator's
command finds them by their entry points (pyproject.toml, `sourceflow.commands`)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from console.settings import DEFAULT_PORT
from ops.cli import operator_config, stack_dir_option, state_dir_option
from ops.output import echo_json, json_option, to_json


@click.command()
@stack_dir_option
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=2,
    show_default=True,
    help="Worker processes per service.",
)
@click.option(
    "--console-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port of the web console (0: any free one).",
)
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    metavar="NAME=SIZE",
    help="Demo vendor dataset to serve (repeatable).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON lines: the settings once ready, then each worker restarted, then `stopped`.",
)
def up(
    state_dir: Path, workers: int, console_port: int, datasets: tuple[str, ...], as_json: bool
) -> None:
    """Start the embedded stack and its web console, and keep them running until Ctrl-C
    (SIGINT) or SIGTERM; a worker that dies is started again."""
    from local.stack import DEFAULT_DATASETS, LocalStack, StackOptions

    options = StackOptions(
        state_dir=state_dir,
        database_url=os.environ.get("DATABASE_URL") or None,
        workers_per_service=workers,
        datasets=datasets or DEFAULT_DATASETS,
    )
    _stop_on_signals()
    say = _json_lines if as_json else _text
    with contextlib.suppress(_StopRequested), LocalStack(options) as stack:
        say(
            "ready",
            f"sourceflow stack ready; settings in {stack.env_file}",
            env_file=stack.env_file,
            env=stack.env,
            people=stack.people,
            console=_serve_console(state_dir, console_port, say),
        )
        while True:
            time.sleep(SUPERVISE_SECONDS)
            for line in stack.supervise():
                say("supervisor", line)
    say("stopped", "stopped")


def _serve_console(state_dir: Path, port: int, say: Any) -> str | None:
    """The web console beside the stack (docs/console.md): its URL, or None when it cannot
    listen (the port taken), which `up` says and runs on without it."""
    from console.serve import ConsoleNotStarted, local_console, start_in_thread

    try:
        return start_in_thread(local_console(operator_config(state_dir), port=port)).url
    except ConsoleNotStarted as exc:
        say("console-not-started", f"console not started: {exc}")
        return None


def _text(event: str, line: str, **details: Any) -> None:
    """What `up` says, for people: the line, and once ready the settings and people."""
    click.echo(line)
    if event == "ready":
        for key, value in details["env"].items():
            click.echo(f"  {key}={value}")
        click.echo("people (each acts with SOURCEFLOW_CREDENTIALS=<their file> sourceflow …):")
        for person, credentials in details["people"].items():
            click.echo(f"  {person}: {credentials}")
        if details["console"]:
            click.echo(f"console: {details['console']} (sign in with a person's login, password)")
        click.echo("Ctrl-C stops everything.")
        sys.stdout.flush()  # what to open and how to sign in, also when written to a log


def _json_lines(event: str, line: str, **details: Any) -> None:
    """What `up --json` says: one JSON object a line, as it happens."""
    click.echo(to_json({"event": event, "message": line, **details}, indent=None))


# How often `up` looks for dead workers.
SUPERVISE_SECONDS = 0.5


class _StopRequested(BaseException):
    """SIGINT or SIGTERM arrived: `up` stops the stack, wherever it was (starting included)."""


def _stop_on_signals() -> None:
    """Stop on the first SIGINT or SIGTERM, and ignore the ones that come while stopping.

    SIGINT is handled even when `up` was started in the background, where the shell ignores it
    (SIG_IGN) and Python would then never raise KeyboardInterrupt."""
    asked = threading.Event()

    def request_stop(signum: int, _: FrameType | None) -> None:
        if not asked.is_set():
            asked.set()
            raise _StopRequested(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)


@click.command()
@stack_dir_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="The runs and failed checks as one JSON document; the narration goes to stderr.",
)
def demo(state_dir: Path, as_json: bool) -> None:
    """Run demo sources through the state machine on the embedded stack and show the runs."""
    from local.demo import run_demo

    database_url = os.environ.get("DATABASE_URL") or None
    sys.exit(run_demo(state_dir, database_url=database_url, as_json=as_json))


@click.command()
@json_option
@state_dir_option
def tick(as_json: bool, state_dir: Path) -> None:
    """Fire every schedule rule once, now (as EventBridge would on its schedule)."""
    from local.ticker import fire_all

    config = operator_config(state_dir)
    fired = fire_all(config.client("events"), config.client("sqs"), config.names.prefix)
    if as_json:
        echo_json({"fired": fired})
    else:
        click.echo(f"fired {len(fired)} schedule rule(s): {', '.join(fired) or 'none found'}")
