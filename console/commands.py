"""`sourceflow console`: the web console against the deployment the other commands reach (a
running `sourceflow up`'s local.env, or the environment). Added to `sourceflow` by its entry
point, as the embedded stack's commands are."""

from __future__ import annotations

from pathlib import Path

import click

from console.settings import DEFAULT_HOST, DEFAULT_PORT
from ops.cli import operator_config, state_dir_option


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
def console(state_dir: Path, host: str, port: int) -> None:
    """Serve the web console until Ctrl-C: sources, runs with their state machine, runs over
    time, approvals, dead letters, status. Sign in with your own database login and password
    (on the embedded stack: <state dir>/people/<you>.env)."""
    # (imported here: `sourceflow` loads this command on every run, and works without the
    # console's extra installed)
    from console.serve import local_console

    served = local_console(operator_config(state_dir), host=host, port=port)
    click.echo(f"console on http://{host}:{port}/ (Ctrl-C stops it)")
    served.server.run()
