"""The demo vendor's HTTP server: its state (datasets, faults, concurrency limits), the handler
of its API and admin endpoints, and starting and running it."""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlsplit

from local.vendor.datasets import Dataset, HttpError, Query, page_format, parse_query
from local.vendor.hostile import (
    DEFAULT_INFLATED_BYTES,
    MAX_INFLATED_BYTES,
    PAGE_MODES,
    RawAnswer,
    hostile_page,
)
from local.vendor.records import (
    ANNOUNCEMENT,
    DEFAULT_DATASET_SPECS,
    DEFAULT_DATASETS,
    EPOCH_START,
    MAX_BODY_BYTES,
    MAX_CLOCK_OFFSET_S,
    MAX_DATASET_SIZE,
    MAX_VISIBLE_AFTER_S,
    default_anchor,
    format_timestamp,
    parse_timestamp,
)
from shared.connectors.http_api import NEXT_PAGE_TOKEN_HEADER

# ---------------------------------------------------------------------------------------------
# Server state: datasets, faults and concurrency limits
# ---------------------------------------------------------------------------------------------

# The longest Retry-After the vendor is asked to send.
MAX_RETRY_AFTER_S = 86_400


@dataclass
class Fault:
    """Injected misbehaviour for one dataset's record pages (see `POST /admin/faults`)."""

    fail_status: int | None = None
    after_records: int = 0
    page_delay_ms: int = 0
    fail_times: int | None = None  # failures left before the fault clears itself; None = forever
    served: int = 0  # records served for the dataset since the fault was set
    # A hostile page the dataset serves instead of its own (local.vendor.hostile).
    page_mode: str | None = None
    inflated_bytes: int = DEFAULT_INFLATED_BYTES
    # Sent as Retry-After with each injected failure (a 429 or 503 that says when to come back).
    retry_after_s: int | None = None

    def describe(self) -> dict[str, Any]:
        """The fault as the admin endpoint reports it."""
        return {
            "fail_status": self.fail_status,
            "after_records": self.after_records,
            "page_delay_ms": self.page_delay_ms,
            "fail_times": self.fail_times,
            "served": self.served,
            "page_mode": self.page_mode,
            "inflated_bytes": self.inflated_bytes,
            "retry_after_s": self.retry_after_s,
        }


@dataclass
class ConcurrencyLimit:
    """How many record requests of one dataset the vendor serves at once (`POST /admin/limits`),
    as a rate-limited API does: a request beyond it is answered 429 with Retry-After. It counts
    what it saw, refused requests included, so a test can prove a client kept under it."""

    max_concurrent: int
    retry_after_s: int = 1
    in_flight: int = 0
    max_seen: int = 0  # the most requests in flight at once, the refused ones counted
    refused: int = 0
    pages: int = 0  # records pages served (200) since the limit was set

    def describe(self) -> dict[str, Any]:
        """The limit and its counts, as the admin endpoint reports them."""
        return {
            "max_concurrent": self.max_concurrent,
            "retry_after_s": self.retry_after_s,
            "in_flight": self.in_flight,
            "max_seen": self.max_seen,
            "refused": self.refused,
            "pages": self.pages,
        }


@dataclass
class VendorState:
    """Everything the server knows; shared by the handler threads, guarded by one lock."""

    anchor: datetime
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    datasets: dict[str, Dataset] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    limits: dict[str, ConcurrencyLimit] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Set when the faults are cleared: pages waiting out an injected delay go on at once, so a
    # test that hung a request leaves no request hanging behind it.
    faults_cleared: threading.Event = field(default_factory=threading.Event)
    # Benchmarks only: every records page, once rendered, is served again from memory, so that
    # what is measured downstream is not the vendor's rendering.
    page_cache: dict[str, RawAnswer] | None = None
    # Benchmarks only: how long each cached records page waits before it is sent, as the pages
    # of a vendor far away would (the faults' delay applies to pages rendered).
    cached_page_delay_s: float = 0.0

    def add(self, name: str, size: int) -> Dataset:
        """Register a dataset anchored at the server's anchor."""
        with self.lock:
            dataset = Dataset(name, size, self.anchor)
            self.datasets[name] = dataset
            return dataset

    def get(self, name: str) -> Dataset:
        """The named dataset, or a 404 that lists the known ones so the caller can fix the name."""
        with self.lock:
            dataset = self.datasets.get(name)
            known = ", ".join(sorted(self.datasets)) or "(none)"
        if dataset is None:
            raise HttpError(404, f"unknown dataset {name!r}; known datasets: {known}")
        return dataset

    def get_or_create(self, name: str) -> Dataset:
        """The named dataset, created empty if new: upserts may start a dataset."""
        with self.lock:
            dataset = self.datasets.get(name)
            if dataset is None:
                dataset = Dataset(name, 0, self.anchor)
                self.datasets[name] = dataset
            return dataset

    def readable(self, name: str) -> Dataset:
        """The named dataset as a reader sees it now: upserts whose time has come are visible."""
        dataset = self.get(name)
        dataset.publish(self.clock())
        return dataset

    def before_page(self, name: str) -> None:
        """Apply a dataset's fault before serving a page: delay, then maybe fail."""
        with self.lock:
            fault = self.faults.get(name)
            delay = 0 if fault is None else fault.page_delay_ms
            cleared = self.faults_cleared
        if delay:
            cleared.wait(delay / 1000)
        with self.lock:
            fault = self.faults.get(name)
            if fault is None or fault.fail_status is None or fault.served < fault.after_records:
                return
            status, served, retry_after = fault.fail_status, fault.served, fault.retry_after_s
            if fault.fail_times is not None:
                fault.fail_times -= 1
                if fault.fail_times <= 0:
                    fault.fail_status = None
        raise HttpError(
            status,
            f"injected fault for dataset {name!r}: failing after {served} records",
            {} if retry_after is None else {"Retry-After": str(retry_after)},
        )

    @contextmanager
    def admitted(self, name: str) -> Iterator[None]:
        """One records request of the dataset, counted against its concurrency limit while it
        is served; beyond the limit it is refused at once with 429 and Retry-After."""
        with self.lock:
            limit = self.limits.get(name)
            if limit is not None:
                limit.in_flight += 1
                limit.max_seen = max(limit.max_seen, limit.in_flight)
                if limit.in_flight > limit.max_concurrent:
                    limit.in_flight -= 1
                    limit.refused += 1
                    raise HttpError(
                        429,
                        f"too many requests for dataset {name!r}: at most "
                        f"{limit.max_concurrent} at once",
                        {"Retry-After": str(limit.retry_after_s)},
                    )
        try:
            yield
            if limit is not None:
                with self.lock:
                    limit.pages += 1
        finally:
            if limit is not None:
                with self.lock:
                    limit.in_flight -= 1

    def page_mode(self, name: str) -> tuple[str | None, int]:
        """The hostile page a dataset serves (None: its own), and how large a bomb inflates."""
        with self.lock:
            fault = self.faults.get(name)
        return (None, 0) if fault is None else (fault.page_mode, fault.inflated_bytes)

    def after_page(self, name: str, served: int) -> None:
        """Count records served, which is what `after_records` is measured against."""
        with self.lock:
            fault = self.faults.get(name)
            if fault is not None:
                fault.served += served


def _int_field(body: Mapping[str, Any], name: str, default: int | None, low: int, high: int) -> Any:
    """An optional bounded integer from a JSON body, or 400 naming the field."""
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HttpError(
            400, f"{name}={value!r} is not valid; expected an integer from {low} to {high}"
        )
    return value


def parse_fault(body: Mapping[str, Any]) -> tuple[str, Fault]:
    """The dataset name and fault described by a `POST /admin/faults` body."""
    name = body.get("dataset")
    if not isinstance(name, str) or not name:
        raise HttpError(400, f"dataset={name!r} is not valid; expected a dataset name")
    page_mode = body.get("page_mode")
    if page_mode is not None and page_mode not in PAGE_MODES:
        raise HttpError(400, f"page_mode={page_mode!r} is not valid; expected one of {PAGE_MODES}")
    fault = Fault(
        fail_status=_int_field(body, "fail_status", None, 400, 599),
        after_records=_int_field(body, "after_records", 0, 0, 2**62),
        page_delay_ms=_int_field(body, "page_delay_ms", 0, 0, 600_000),
        fail_times=_int_field(body, "fail_times", None, 1, 2**62),
        page_mode=page_mode,
        inflated_bytes=_int_field(
            body, "inflated_bytes", DEFAULT_INFLATED_BYTES, 1, MAX_INFLATED_BYTES
        ),
        retry_after_s=_int_field(body, "retry_after_s", None, 0, MAX_RETRY_AFTER_S),
    )
    return name, fault


def parse_limit(body: Any) -> tuple[str, ConcurrencyLimit]:
    """The dataset name and concurrency limit described by a `POST /admin/limits` body."""
    name = body.get("dataset") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name or "max_concurrent" not in body:
        raise HttpError(400, 'body must be {"dataset": name, "max_concurrent": N}')
    return name, ConcurrencyLimit(
        max_concurrent=_int_field(body, "max_concurrent", 1, 1, 1000),
        retry_after_s=_int_field(body, "retry_after_s", 1, 0, MAX_RETRY_AFTER_S),
    )


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class VendorServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the vendor state for its handlers."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: VendorState) -> None:
        super().__init__(address, VendorHandler)
        self.state = state

    @property
    def base_url(self) -> str:
        """Where clients reach this server (the real port, also when bound to port 0)."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class VendorHandler(BaseHTTPRequestHandler):
    """Routes requests to the state; every response, errors included, is JSON."""

    server: VendorServer
    protocol_version = "HTTP/1.1"  # keep-alive: benchmarks page through many requests
    timeout = 60  # drop idle keep-alive connections rather than hold a thread forever

    def do_GET(self) -> None:
        """Handle GET."""
        self._handle("GET")

    def do_POST(self) -> None:
        """Handle POST."""
        self._handle("POST")

    def do_DELETE(self) -> None:
        """Handle DELETE."""
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: a line per request would drown test and benchmark output."""

    def _handle(self, method: str) -> None:
        """Read the body first (keep-alive needs it consumed even on errors), route, reply."""
        pages = self.server.state.page_cache
        if pages is not None:
            if method == "GET" and (cached := pages.get(self.path)) is not None:
                self._read_body()
                time.sleep(self.server.state.cached_page_delay_s)
                self._send(200, cached.body, cached.headers)
                return
            if method != "GET":
                pages.clear()  # an upsert or a fault changes what pages say
        headers = {"Content-Type": "application/json"}
        try:
            body = self._read_body()
            status, payload = self._route(method, body)
        except HttpError as exc:
            status, payload = exc.status, {"error": exc.message}
            headers.update(exc.headers)
        except Exception as exc:  # a bug must still answer, or the client hangs
            status, payload = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}
        answer = (
            payload
            if isinstance(payload, RawAnswer)
            else RawAnswer(json.dumps(payload, separators=(",", ":")).encode(), headers)
        )
        if pages is not None and method == "GET" and status == 200 and "/records" in self.path:
            pages[self.path] = answer
        self._send(status, answer.body, answer.headers)

    def _read_body(self) -> Any:
        """The parsed JSON body, or None when there is none."""
        length_header = self.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else 0
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise HttpError(413, f"body of {length} bytes is over the {MAX_BODY_BYTES} byte limit")
        if length == 0:
            return None
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from exc

    def _send(self, status: int, payload: bytes, headers: Mapping[str, str] | None = None) -> None:
        """Write a response (JSON unless `headers` say otherwise) with an exact length, as
        keep-alive requires."""
        self.send_response(status)
        for name, value in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _route(self, method: str, body: Any) -> tuple[int, dict[str, Any] | RawAnswer]:
        """Dispatch on (method, path); unknown paths are 404, wrong methods 405."""
        url = urlsplit(self.path)
        parts = [unquote(part) for part in url.path.split("/") if part]
        state = self.server.state
        if parts == ["health"]:
            _require_method(method, "GET")
            return 200, {"status": "ok"}
        if parts == ["datasets"]:
            _require_method(method, "GET")
            with state.lock:
                datasets = list(state.datasets.values())
            return 200, {"datasets": [d.describe() for d in datasets]}
        if len(parts) == 3 and parts[0] == "datasets" and parts[2] == "records":
            _require_method(method, "GET", "POST")
            if method == "POST":
                return 200, _post_records(state, parts[1], body)
            return 200, _get_records(state, parts[1], url.query)
        if len(parts) == 3 and parts[0] == "datasets" and parts[2] == "count":
            _require_method(method, "GET")
            query, _ = parse_query(url.query)
            return 200, {"count": state.readable(parts[1]).count(query)}
        if parts == ["admin", "faults"]:
            _require_method(method, "GET", "POST", "DELETE")
            return 200, _faults(state, method, body)
        if parts == ["admin", "clock"]:
            _require_method(method, "POST")
            return 200, _clock(state, body)
        if parts == ["admin", "limits"]:
            _require_method(method, "GET", "POST", "DELETE")
            return 200, _limits(state, method, body)
        raise HttpError(404, f"no endpoint at {url.path}; see GET /health, /datasets")


def _require_method(method: str, *allowed: str) -> None:
    """405 when the path exists but not for this method."""
    if method not in allowed:
        raise HttpError(405, f"method {method} not allowed here; use {' or '.join(allowed)}")


def _get_records(state: VendorState, name: str, query_string: str) -> dict[str, Any] | RawAnswer:
    """`GET /datasets/{name}/records`: one filtered page, subject to injected faults; with
    `format=jsonl`, as JSON lines."""
    dataset = state.readable(name)
    query, page_size = parse_query(query_string)
    if page_format(query_string) == "jsonl":
        answer = _records_page(state, name, dataset, query, page_size)
        return answer if isinstance(answer, RawAnswer) else json_lines_page(answer)
    return _records_page(state, name, dataset, query, page_size)


def _records_page(
    state: VendorState, name: str, dataset: Dataset, query: Query, page_size: int
) -> dict[str, Any] | RawAnswer:
    mode, inflated_bytes = state.page_mode(name)
    if mode == "repeated_token":
        query = replace(query, after=None)  # the first page, whatever token was asked for
    with state.admitted(name):
        state.before_page(name)
        records, token = dataset.page(query, page_size)
        state.after_page(name, len(records))
    if mode is not None:
        return hostile_page(mode, records, token, inflated_bytes)
    return {"records": records, "next_page_token": token}


def json_lines_page(page: Mapping[str, Any]) -> RawAnswer:
    """A records page as JSON lines, its next token in the header the connector reads."""
    lines = (json.dumps(record, separators=(",", ":")) + "\n" for record in page["records"])
    body = "".join(lines).encode()
    token = page["next_page_token"]
    return RawAnswer(
        body,
        {"Content-Type": "application/x-ndjson", NEXT_PAGE_TOKEN_HEADER: token or ""},
    )


def _post_records(state: VendorState, name: str, body: Any) -> dict[str, Any]:
    """`POST /datasets/{name}/records`: upsert a batch, creating the dataset if needed; the
    records are stamped by the dataset's clock unless they carry last_modified, and with
    `"visible_after_s": N` they become visible only N seconds after their stamp."""
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise HttpError(400, 'body must be {"records": [ {"id": ..., ...}, ... ]}')
    visible_after_s = _int_field(body, "visible_after_s", 0, 0, MAX_VISIBLE_AFTER_S)
    dataset = state.get_or_create(name)
    stored = dataset.upsert(records, dataset.now_s(state.clock()), visible_after_s)
    return {"upserted": len(stored), "records": stored}


def _faults(state: VendorState, method: str, body: Any) -> dict[str, Any]:
    """`POST` sets one dataset's fault (resetting its served count); `GET` reports every fault
    and its count; `DELETE` clears all."""
    if method == "GET":
        with state.lock:
            return {"faults": {n: f.describe() for n, f in state.faults.items()}}
    if method == "DELETE":
        with state.lock:
            state.faults.clear()
            state.faults_cleared.set()
            state.faults_cleared = threading.Event()
        return {"faults": {}}
    if not isinstance(body, dict):
        raise HttpError(400, 'body must be {"dataset": name, "fail_status": 500, ...}')
    name, fault = parse_fault(body)
    state.get(name)
    with state.lock:
        state.faults[name] = fault
        return {"faults": {n: f.describe() for n, f in state.faults.items()}}


def _limits(state: VendorState, method: str, body: Any) -> dict[str, Any]:
    """`POST` sets one dataset's concurrency limit (its counts from zero); `GET` reports every
    limit and its counts; `DELETE` lifts them all."""
    if method == "POST":
        name, limit = parse_limit(body)
        state.get(name)
        with state.lock:
            state.limits[name] = limit
    elif method == "DELETE":
        with state.lock:
            state.limits.clear()
    with state.lock:
        return {"limits": {n: limit.describe() for n, limit in state.limits.items()}}


def _clock(state: VendorState, body: Any) -> dict[str, Any]:
    """`POST /admin/clock`: set how far one dataset's clock runs ahead of the server's
    (`offset_s`, negative: behind); it stamps that dataset's upserts from then on."""
    name = body.get("dataset") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise HttpError(400, 'body must be {"dataset": name, "offset_s": seconds}')
    offset = _int_field(body, "offset_s", 0, -MAX_CLOCK_OFFSET_S, MAX_CLOCK_OFFSET_S)
    dataset = state.get(name)
    with state.lock:
        dataset.clock_offset_s = offset
        now_s = dataset.now_s(state.clock())
    return {"dataset": name, "offset_s": offset, "now": format_timestamp(now_s)}


# ---------------------------------------------------------------------------------------------
# Starting and running
# ---------------------------------------------------------------------------------------------


def _as_anchor(anchor: datetime | str | None) -> datetime:
    """An anchor at whole seconds in UTC; the default is the current hour."""
    if anchor is None:
        return default_anchor()
    moment = parse_timestamp(anchor) if isinstance(anchor, str) else anchor.astimezone(UTC)
    moment = moment.replace(microsecond=0)
    if moment <= EPOCH_START:
        raise ValueError(f"anchor {moment.isoformat()} must be after {EPOCH_START.isoformat()}")
    return moment


def make_server(
    host: str = "127.0.0.1",
    port: int = 0,
    datasets: Mapping[str, int] | None = None,
    anchor: datetime | str | None = None,
    clock: Callable[[], datetime] | None = None,
    cache_pages: bool = False,
    cached_page_delay_ms: int = 0,
) -> VendorServer:
    """A bound but not yet serving vendor server (port 0 picks a free port)."""
    state = VendorState(
        anchor=_as_anchor(anchor),
        page_cache={} if cache_pages else None,
        cached_page_delay_s=cached_page_delay_ms / 1000,
    )
    if clock is not None:
        state.clock = clock
    for name, size in (DEFAULT_DATASETS if datasets is None else datasets).items():
        state.add(name, size)
    return VendorServer((host, port), state)


def _serve_in_thread(server: VendorServer) -> threading.Thread:
    """Serve from a daemon thread; a short poll interval makes `shutdown()` return quickly."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="vendor", daemon=True
    )
    thread.start()
    return thread


def stop_vendor(server: VendorServer) -> None:
    """Stop serving and release the socket."""
    server.shutdown()
    server.server_close()


def _dataset_arg(text: str) -> tuple[str, int]:
    """argparse type for `--dataset name=size`."""
    name, sep, size = text.partition("=")
    if not sep or not name or not size.isdigit() or int(size) > MAX_DATASET_SIZE:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid; expected name=size with size from 0 to {MAX_DATASET_SIZE}"
        )
    return name, int(size)


def _anchor_arg(text: str) -> datetime:
    """argparse type for `--anchor`."""
    try:
        return _as_anchor(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid: {exc}") from exc


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of `python -m local.vendor`."""
    parser = argparse.ArgumentParser(prog="python -m local.vendor", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0 = any)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument(
        "--anchor", type=_anchor_arg, default=None, help="ISO time the data treats as now"
    )
    parser.add_argument(
        "--dataset",
        type=_dataset_arg,
        action="append",
        default=None,
        metavar="NAME=SIZE",
        help=f"serve this dataset (repeatable; default {' '.join(DEFAULT_DATASET_SPECS)})",
    )
    parser.add_argument(
        "--cache-pages",
        action="store_true",
        help="benchmarks: keep each rendered records page in memory and serve it from there",
    )
    parser.add_argument(
        "--cached-page-delay-ms",
        type=int,
        default=0,
        help="benchmarks: wait this long before sending each cached records page",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT, announcing the address on one line for a supervisor."""
    args = parse_args(argv)
    datasets = dict(args.dataset) if args.dataset else None
    server = make_server(
        args.host,
        args.port,
        datasets,
        args.anchor,
        cache_pages=args.cache_pages,
        cached_page_delay_ms=args.cached_page_delay_ms,
    )
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    thread = _serve_in_thread(server)
    for dataset in list(server.state.datasets.values()):
        threading.Thread(target=dataset.warm, name=f"warm-{dataset.name}", daemon=True).start()
    print(f"{ANNOUNCEMENT}{server.base_url}", flush=True)
    while not stopping.wait(0.2):
        pass
    stop_vendor(server)
    thread.join(timeout=5)
    return 0
