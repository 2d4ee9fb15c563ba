"""Hostile vendor pages, measured (issue 16; docs/limits.md): what a page of about 300 KB on
the wire that inflates to 300 MB, and a next_page_token that never changes, do to a download
worker's memory and to how long its download goes on.

A loopback server answers every records request of one dataset with the hostile page
(local.vendor.hostile): `gzip_bomb`, or `repeated_token` (one record, and the same token, on
every page). A fresh process — the download worker's imports loaded, so its memory starts where
a worker's does — builds the http_api connector of the tree under test and reads a window from
that server until the connector stops, or until the bench stops it at MAX_PAGES pages (a
connector that follows a repeated token never stops by itself; the issue saw 3,000 pages
followed). It reports how the read ended, its pages and seconds, and its resident memory
before the read and at its peak.

`python -m bench.hostile [--tree PATH]`: PATH is the checkout whose `shared` package is
measured (default: this one), so the same measurement runs against another branch's code, e.g.
a worktree of main. Loopback only; nothing else of the stack is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import json_output, serving
from local.vendor.hostile import DEFAULT_INFLATED_BYTES, gzip_bomb

MAX_PAGES = 3_000
HERE = Path(__file__).resolve().parents[1]

# Run in the child with the measured tree first on its path: the connector is built as that
# tree builds it (SourceAccess with the embedded stack's loopback allowed, or connector_for
# before sources were bound to their access), then only `records` is used.
_CHILD = """
import json, resource, sys, time
from datetime import UTC, datetime

import services.download.service  # noqa: F401  the download worker's imports
from shared.rules.flows import Window, WindowField


def rss_mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024


url, dataset, max_pages = sys.argv[1], sys.argv[2], int(sys.argv[3])
connection = {"base_url": url, "dataset": dataset}
try:
    from shared.connectors import source_access
    from shared.runtime.settings import SourceAccessSettings
except ImportError:
    from shared.connectors import connector_for
else:
    embedded = SourceAccessSettings("sourceflow/local/sources/", frozenset(), allow_loopback=True)
    connector_for = source_access(embedded).connector
connector = connector_for("bench-hostile", "http_api", connection)
window = Window(
    WindowField.LAST_MODIFIED,
    datetime(2020, 1, 1, tzinfo=UTC),
    datetime(2030, 1, 1, tzinfo=UTC),
    False,
)
before = rss_mb("VmRSS")
started, records, ended = time.perf_counter(), 0, "read to the end"
try:
    for _ in connector.records(window):
        records += 1
        if records >= max_pages:
            ended = f"stopped by the bench after {max_pages:,} pages"
            break
except Exception as exc:
    ended = f"{getattr(exc, 'error_name', type(exc).__name__)}: {str(exc)[:160]}"
figures = {
    "ended": ended,
    "records": records,
    "seconds": round(time.perf_counter() - started, 3),
    "rss_before_mb": round(before, 1),
    "peak_rss_mb": round(rss_mb("VmHWM"), 1),
}
print(json.dumps(figures))
"""


class _HostileHandler(BaseHTTPRequestHandler):
    """Answers every request with the server's hostile page."""

    server: _HostileServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """The dataset named in the path picks the page."""
        body, headers = self.server.pages[self.path.split("/")[2]]
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _HostileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, pages: dict[str, tuple[bytes, dict[str, str]]]) -> None:
        super().__init__(("127.0.0.1", 0), _HostileHandler)
        self.pages = pages

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connector that stops reading a page drops the connection: nothing to report."""


@contextmanager
def hostile_server() -> Iterator[str]:
    """A loopback server of the two hostile datasets; yields its base URL."""
    repeated = json.dumps(
        {"records": [{"id": "L1", "last_modified": "2024-01-01T00:00:00Z"}], "next_page_token": "p"}
    ).encode()
    pages = {
        "gzip_bomb": (
            gzip_bomb(DEFAULT_INFLATED_BYTES),
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        ),
        "repeated_token": (repeated, {"Content-Type": "application/json"}),
    }
    with serving(_HostileServer(pages)) as url:
        yield url


def measure(tree: Path, url: str, dataset: str) -> dict[str, Any]:
    """One read of the dataset by the connector of `tree`, in a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(tree), "AWS_DEFAULT_REGION": "us-east-1"}
    return json_output(
        [sys.executable, "-c", _CHILD, url, dataset, str(MAX_PAGES)], env=env, cwd=tree
    )


def measure_hostile(tree: Path) -> dict[str, Any]:
    with hostile_server() as url:
        bomb = len(gzip_bomb(DEFAULT_INFLATED_BYTES))
        results = {
            dataset: measure(tree, url, dataset) for dataset in ("gzip_bomb", "repeated_token")
        }
    results["gzip_bomb"]["wire_bytes"] = bomb
    results["gzip_bomb"]["inflated_bytes"] = DEFAULT_INFLATED_BYTES
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--tree", type=Path, default=HERE, help="the checkout to measure")
    tree = parser.parse_args(argv).tree.resolve()
    results = measure_hostile(tree)
    print(json.dumps({"tree": str(tree), **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
