"""The `sourceflow` command."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from infra.resources import SERVICES

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


@main.group()
def dlq() -> None:
    """Dead-lettered messages: list them, replay them."""


_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Where the running stack wrote local.env.",
)


@dlq.command("list")
@click.argument("queue", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
@_state_dir_option
def dlq_list(queue: str | None, as_json: bool, state_dir: Path) -> None:
    """Show each dead-lettered message: queue, age, receive count, source, execution, schema,
    and the error that sent it there. QUEUE: a service (download) or a queue name; all if
    omitted."""
    from infra.dlq import list_dead_letters

    env = _stack_env(state_dir)
    services = (_service(queue),) if queue else SERVICES
    with _operator(env) as (clients, db, names):
        rows = list_dead_letters(clients("sqs"), db, names, services)
    _print_rows(
        rows,
        as_json,
        "dead letters",
        [
            "queue",
            "message_id",
            "age_seconds",
            "receive_count",
            "source_id",
            "execution_arn",
            "schema",
            "error",
        ],
    )


@dlq.command("replay")
@click.argument("queue")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many messages.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
@_state_dir_option
def dlq_replay(
    queue: str, dry_run: bool, limit: int | None, as_json: bool, state_dir: Path
) -> None:
    """Move QUEUE's dead letters back to its work queue, keeping body and attributes; park
    (keep aside, in public.parked_message) task messages whose task is over."""
    from infra.dlq import replay

    env = _stack_env(state_dir)
    with _operator(env) as (clients, db, names):
        rows = replay(
            clients("sqs"),
            clients("stepfunctions"),
            db,
            names,
            _service(queue),
            dry_run=dry_run,
            limit=limit,
        )
    _print_rows(
        rows, as_json, "replay", ["queue", "message_id", "source_id", "schema", "action", "reason"]
    )


def _service(queue: str) -> str:
    from infra.dlq import resolve_service

    try:
        return resolve_service(queue)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="QUEUE") from None


@contextlib.contextmanager
def _operator(env: dict[str, str]) -> Any:
    from infra.local.stack import aws_client
    from infra.resources import Names
    from shared.db import Database

    db = Database(env["DATABASE_URL"], application_name="sourceflow-operator")
    try:
        yield (lambda name: aws_client(env, name)), db, Names(env["SOURCEFLOW_STAGE"])
    finally:
        db.close()


def _print_rows(rows: list[dict[str, Any]], as_json: bool, title: str, columns: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{title}: {len(rows)}", title_justify="left")
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    Console(width=None if sys.stdout.isatty() else 220).print(table)


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
