"""The console served on this machine (uvicorn): by `sourceflow console` in the foreground,
and by `sourceflow up` beside the embedded stack, in a thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import uvicorn

from console.app import create_app
from console.auth import PeopleSignIn
from console.settings import DEFAULT_HOST, DEFAULT_PORT
from ops.config import OperatorConfig, OperatorError

STARTUP_SECONDS = 30.0


class ConsoleNotStarted(OperatorError):
    """The console could not listen; the message says where and what to do."""


@dataclass
class LocalConsole:
    """A running console; `url` once started, `stop()` ends it."""

    server: uvicorn.Server
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        config = self.server.config
        sockets = [s for server in self.server.servers for s in server.sockets]
        port = sockets[0].getsockname()[1] if sockets else config.port
        return f"http://{config.host}:{port}/"

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)


def local_console(
    config: OperatorConfig, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> LocalConsole:
    """The console of the deployment `config` reaches, signed in to with people's database
    logins (port 0: any free port)."""
    # The names this machine answers to (a page of another site rebinding its own name to this
    # address is refused), the address given included.
    app = create_app(PeopleSignIn(config), allowed_hosts=(host, "localhost", "127.0.0.1"))
    return LocalConsole(
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    )


def start_in_thread(console: LocalConsole) -> LocalConsole:
    """Serve in a daemon thread; returns once it listens (its URL then names the port)."""
    console.thread = threading.Thread(target=console.server.run, name="console", daemon=True)
    console.thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not console.server.started:
        if not console.thread.is_alive() or time.monotonic() > deadline:
            raise ConsoleNotStarted(
                f"the console did not start on {console.server.config.host}:"
                f"{console.server.config.port}: is the port in use? Pick another (--console-port)"
            )
        time.sleep(0.05)
    return console
