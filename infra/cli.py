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


@main.command()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Where the running stack wrote local.env.",
)
def tick(state_dir: Path) -> None:
    """Fire every schedule rule once, now (as EventBridge would on its schedule)."""
    from infra.local.stack import aws_client
    from infra.local.ticker import fire_all
    from infra.resources import Names

    env = _stack_env(state_dir)
    fired = fire_all(
        aws_client(env, "events"), aws_client(env, "sqs"), Names(env["SOURCEFLOW_STAGE"]).prefix
    )
    click.echo(f"fired {len(fired)} schedule rule(s): {', '.join(fired) or 'none found'}")


def _stack_env(state_dir: Path) -> dict[str, str]:
    from infra.local.stack import read_env_file

    env_file = state_dir / "local.env"
    if not env_file.exists():
        raise click.ClickException(
            f"no running stack: {env_file} does not exist; start one with `sourceflow up`"
        )
    return read_env_file(env_file)


if __name__ == "__main__":
    main()
