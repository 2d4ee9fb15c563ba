"""Hostile servers on 127.0.0.1 for the integration and e2e tiers: they play the attacker a
connection row may point at, and keep what they were sent.

- `HostileHttp`: answers every GET with what `answer(request)` says (a status, headers, a body)
  and records each request's path and headers: a vendor that redirects elsewhere, echoes the
  request's headers in its error body, or collects what it is sent.
- `HostilePostgres`: speaks just enough of PostgreSQL's protocol to ask for the password in
  clear text (or as md5), and records what the client sends back.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseRequestHandler, TCPServer, ThreadingTCPServer
from typing import Any


@dataclass(frozen=True)
class SentRequest:
    path: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class HostileHttp:
    answer: Callable[[SentRequest], Answer]
    received: list[SentRequest] = field(default_factory=list)
    url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                request = SentRequest(self.path, dict(self.headers.items()))
                server.received.append(request)
                answer = server.answer(request)
                self.send_response(answer.status)
                for name, value in {
                    **answer.headers,
                    "Content-Length": str(len(answer.body)),
                }.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *_: Any) -> None:
                """Quiet: the test reads `received`."""

        return Handler


@contextmanager
def _serving(server: TCPServer) -> Iterator[int]:
    """`server` answering in a thread of its own for the block's length; yields its port."""
    with server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield int(server.server_address[1])
        finally:
            server.shutdown()
            thread.join(timeout=10)


@contextmanager
def serving_http(answer: Callable[[SentRequest], Answer]) -> Iterator[HostileHttp]:
    """A hostile HTTP server on 127.0.0.1 (a port of its own) for the block's length."""
    hostile = HostileHttp(answer)
    with _serving(ThreadingHTTPServer(("127.0.0.1", 0), hostile.handler())) as port:
        hostile.url = f"http://127.0.0.1:{port}"
        yield hostile


# -- PostgreSQL --------------------------------------------------------------------------------

_SSL_REQUEST, _GSSENC_REQUEST = 80877103, 80877104
CLEARTEXT, MD5 = 3, 5  # AuthenticationCleartextPassword, AuthenticationMD5Password


@dataclass
class HostilePostgres:
    """Asks every client for its password with `method` (CLEARTEXT or MD5)."""

    method: int
    passwords: list[bytes] = field(default_factory=list)
    port: int = 0

    def handler(self) -> type[BaseRequestHandler]:
        server = self

        class Handler(BaseRequestHandler):
            def handle(self) -> None:
                sock = self.request
                sock.settimeout(10)
                if not _startup(sock):
                    return
                salt = b"salt" if server.method == MD5 else b""
                sock.sendall(b"R" + struct.pack("!ii", 8 + len(salt), server.method) + salt)
                kind = _exactly(sock, 1)
                if kind != b"p":
                    return  # the client refused to answer: nothing was sent
                (length,) = struct.unpack("!i", _exactly(sock, 4))
                server.passwords.append(_exactly(sock, length - 4).rstrip(b"\0"))
                fields = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"
                sock.sendall(b"E" + struct.pack("!i", 4 + len(fields)) + fields)

        return Handler


def _startup(sock: Any) -> bool:
    """Read the startup packet, declining TLS and GSS encryption first; False on hang-up."""
    while True:
        head = _exactly(sock, 8)
        if len(head) < 8:
            return False
        length, code = struct.unpack("!ii", head)
        if code in (_SSL_REQUEST, _GSSENC_REQUEST):
            sock.sendall(b"N")
            continue
        _exactly(sock, length - 8)
        return True


def _exactly(sock: Any, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


@contextmanager
def serving_postgres(method: int) -> Iterator[HostilePostgres]:
    """A hostile PostgreSQL on 127.0.0.1 (a port of its own) for the block's length."""
    hostile = HostilePostgres(method)
    with _serving(ThreadingTCPServer(("127.0.0.1", 0), hostile.handler())) as port:
        hostile.port = port
        yield hostile
