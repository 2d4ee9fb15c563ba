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

import click

from console.settings import DEFAULT_PORT
from ops.cli import operator_config, stack_dir_option, state_dir_option


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
def up(state_dir: Path, workers: int, console_port: int, datasets: tuple[str, ...]) -> None:
    """Start the embedded stack and its web console, and keep them running until Ctrl-C
    (SIGINT) or SIGTERM; a worker that dies is started again."""
    from console.serve import ConsoleNotStarted, local_console, start_in_thread
    from local.stack import DEFAULT_DATASETS, LocalStack, StackOptions

    options = StackOptions(
        state_dir=state_dir,
        database_url=os.environ.get("DATABASE_URL") or None,
        workers_per_service=workers,
        datasets=datasets or DEFAULT_DATASETS,
    )
    _stop_on_signals()
    with contextlib.suppress(_StopRequested), LocalStack(options) as stack:
        click.echo(f"sourceflow stack ready; settings in {stack.env_file}")
        for key, value in stack.env.items():
            click.echo(f"  {key}={value}")
        click.echo("people (each acts with SOURCEFLOW_CREDENTIALS=<their file> sourceflow …):")
        for person, credentials in stack.people.items():
            click.echo(f"  {person}: {credentials}")
        try:
            served = start_in_thread(local_console(operator_config(state_dir), port=console_port))
            click.echo(f"console: {served.url} (sign in with a person's login and password)")
        except ConsoleNotStarted as exc:  # the stack serves on without it
            click.echo(f"console not started: {exc}", err=True)
        sys.stdout.flush()  # what to open and how to sign in, also when written to a log
        click.echo("Ctrl-C stops everything.")
        while True:
            time.sleep(SUPERVISE_SECONDS)
            for line in stack.supervise():
                click.echo(line)
    click.echo("stopped")


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
def demo(state_dir: Path) -> None:
    """Run demo sources through the state machine on the embedded stack and show the runs."""
    from local.demo import run_demo

    sys.exit(run_demo(state_dir, database_url=os.environ.get("DATABASE_URL") or None))


@click.command()
@state_dir_option
def tick(state_dir: Path) -> None:
    """Fire every schedule rule once, now (as EventBridge would on its schedule)."""
    from local.ticker import fire_all

    config = operator_config(state_dir)
    fired = fire_all(config.client("events"), config.client("sqs"), config.names.prefix)
    click.echo(f"fired {len(fired)} schedule rule(s): {', '.join(fired) or 'none found'}")
