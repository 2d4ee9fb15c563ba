"""`sourceflow console`: the web console against the deployment the other commands reach (a
running `sourceflow up`'s local.env, or the environment). Added to `sourceflow` by its entry
point, as the embedded stack's commands are."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import click

from console.settings import DEFAULT_HOST, DEFAULT_PORT
from ops.cli import operator_config, state_dir_option
from ops.output import to_json


@click.command()
@state_dir_option
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (0: any free one).",
)
@click.option("--json", "as_json", is_flag=True, help="Say where it listens as one JSON line.")
def console(state_dir: Path, host: str, port: int, as_json: bool) -> None:
    """Serve the web console until Ctrl-C: sources, runs with their state machine, runs over
    time, approvals, dead letters, status. Sign in with your own database login and password
    (on the embedded stack: <state dir>/people/<you>.env)."""
    # (imported here: `sourceflow` loads this command on every run, and works without the
    # console's extra installed)
    from console.serve import local_console, start_in_thread

    served = start_in_thread(local_console(operator_config(state_dir), host=host, port=port))
    if as_json:
        click.echo(to_json({"event": "ready", "console": served.url}, indent=None))
    else:
        click.echo(f"console: {served.url} (Ctrl-C stops it)")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        while served.alive:
            time.sleep(WATCH_SECONDS)
    served.stop()


WATCH_SECONDS = 0.5  # how often `sourceflow console` looks whether its server still runs
