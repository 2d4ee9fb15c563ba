"""An HTTP server's request handler answering one request without a socket: the request is
read from bytes and the response written to bytes, so unit tests can speak HTTP to a handler
(the demo vendor's) while opening no sockets."""

from __future__ import annotations

import io
from socketserver import BaseRequestHandler
from typing import Any


class _Connection:
    """The socket-shaped object a StreamRequestHandler reads from and writes to."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self.sent = bytearray()

    def makefile(self, mode: str, *_: Any) -> io.BytesIO:
        assert mode == "rb", mode  # a handler writes through sendall (wbufsize 0)
        return io.BytesIO(self._request)

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def settimeout(self, _: float | None) -> None:
        """A handler with a `timeout` sets it; bytes in memory never make it wait."""


def serve_in_memory(handler: type[BaseRequestHandler], server: Any, request: bytes) -> bytes:
    """What `handler` answers to the raw HTTP `request`, `server` standing for the server it
    belongs to (whatever attributes the handler reads from it)."""
    connection = _Connection(request)
    handler(connection, ("127.0.0.1", 0), server)  # type: ignore[arg-type]
    return bytes(connection.sent)
