"""The `sourceflow` command."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

import click

DEFAULT_STATE_DIR = Path(".sourceflow")


@click.group()
def main() -> None:
    """sourceflow: incremental ingestion through one Step Functions state machine."""


@main.command()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Where the embedded PostgreSQL data, logs and local.env live.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=2,
    show_default=True,
    help="Worker processes per service.",
)
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    metavar="NAME=SIZE",
    help="Demo vendor dataset to serve (repeatable).",
)
def up(state_dir: Path, workers: int, datasets: tuple[str, ...]) -> None:
    """Start the embedded stack and keep it running until Ctrl-C."""
    from infra.local.stack import DEFAULT_DATASETS, LocalStack, StackOptions

    options = StackOptions(
        state_dir=state_dir,
        database_url=os.environ.get("DATABASE_URL") or None,
        workers_per_service=workers,
        datasets=datasets or DEFAULT_DATASETS,
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with LocalStack(options) as stack:
        click.echo(f"sourceflow stack ready; settings in {stack.env_file}")
        for key, value in stack.env.items():
            click.echo(f"  {key}={value}")
        click.echo("Ctrl-C stops everything.", err=False)
        with contextlib.suppress(KeyboardInterrupt):
            stopping.wait()
    click.echo("stopped")


@main.command()
@click.option(
    "--state-dir", type=click.Path(path_type=Path), default=DEFAULT_STATE_DIR, show_default=True
)
def demo(state_dir: Path) -> None:
    """Run demo sources through the state machine on the embedded stack and show the runs."""
    from infra.demo import run_demo

    sys.exit(run_demo(state_dir, database_url=os.environ.get("DATABASE_URL") or None))


if __name__ == "__main__":
    main()
