"""One measured transfer, run in its own process so that its peak memory is its own.

`python -m bench.transfer MODE --vendor URL --dataset NAME [--page-size N]` prints one JSON line:
its seconds, the bytes it moved, and its peak resident memory (VmHWM of this process, which
did only this transfer). MODE:
- `vendor`: fetch every page as JSON lines and discard it — the vendor serving to a client that
  does nothing with the bytes;
- `ideal`: the same, each page compressed by the fastest gzip there is (ISA-L, at the raw
  objects' level) and discarded — what a download could do at best on this machine;
- `raw`: today's reference: fetch every JSON page (requests, stdlib json for its token) and
  write it gzip-compressed at level 6 to a file;
- `download`: the download service's code path (connector, version filter, S3 sink, ledger,
  manifest) into the raw bucket, configured from the environment like the service
  (DATABASE_URL, RAW_BUCKET, AWS_ENDPOINT_URL…). By default the vendor's dataset in JSON lines;
  `--source-type` and `--connection` (JSON) name another source, `--levers` turns levers off to
  measure what each is worth (`LEVERS`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from isal import isal_zlib

from shared.connectors.http_api import NEXT_PAGE_TOKEN_HEADER, window_params
from shared.rules.flows import parse_flow_params, plan_window
from shared.runtime.catalogue import PART_MAX_RECORDS, RAW_GZIP_LEVEL

# The download's window is frozen (cursor → run start) so that every mode asks the vendor for
# exactly the same pages — the same URLs the connector builds — and all are served from the
# vendor's page cache once rendered.
CURSOR = datetime(1990, 1, 1, tzinfo=UTC)
RUN_START = datetime(2030, 1, 1, tzinfo=UTC)
CHUNK_BYTES = 1 << 20
# What `--levers` may turn off, each to measure what it is worth on its own.
LEVERS = {
    "jsonl": "the vendor's JSON pages instead of JSON lines, each record decoded and re-encoded",
    "isal": "gzip level 6 of zlib (the stdlib's) instead of ISA-L's at RAW_GZIP_LEVEL",
    "prefetch": "each page fetched only once the one before is used",
    "per-page": "the version filter asked record by record, each record's digest made",
    "overlap": "each part uploaded and committed before the next one is read",
    "listed-per-page": "the versions a part landed listed record by record (take_unsaved)",
}


def page_params(page_size: int, page_format: str) -> dict[str, str]:
    """What the download asks the vendor for (so that its pages come from the same cache)."""
    window = plan_window(
        "bench",
        parse_flow_params("bench", {"flow_type": "Normal"}),
        cursor=CURSOR,
        run_start=RUN_START,
        backdate_days=1,
    )
    params = {**window_params(window), "page_size": str(page_size)}
    return {**params, "format": page_format} if page_format != "json" else params


def _json_line_chunks(vendor: str, dataset: str, page_size: int) -> Iterator[bytes]:
    """Every page of the dataset as JSON lines, as it streams in; the next page's token comes
    in a header, so nothing is parsed."""
    url = f"{vendor}/datasets/{dataset}/records"
    params = page_params(page_size, "jsonl")
    with requests.Session() as session:
        while True:
            with session.get(url, params=params, timeout=60, stream=True) as response:
                response.raise_for_status()
                yield from response.iter_content(CHUNK_BYTES)
                token = response.headers.get(NEXT_PAGE_TOKEN_HEADER)
            if not token:
                return
            params["page_token"] = token


def vendor_mode(vendor: str, dataset: str, page_size: int) -> dict[str, Any]:
    return {"bytes": sum(len(chunk) for chunk in _json_line_chunks(vendor, dataset, page_size))}


def ideal(vendor: str, dataset: str, page_size: int) -> dict[str, Any]:
    total = compressed = 0
    compressor = isal_zlib.compressobj(RAW_GZIP_LEVEL, isal_zlib.DEFLATED, 31)
    for chunk in _json_line_chunks(vendor, dataset, page_size):
        total += len(chunk)
        compressed += len(compressor.compress(chunk))
    compressed += len(compressor.flush())
    return {"bytes": total, "compressed_bytes": compressed}


def _json_pages(vendor: str, dataset: str, page_size: int) -> Iterator[bytes]:
    url = f"{vendor}/datasets/{dataset}/records"
    params = page_params(page_size, "json")
    with requests.Session() as session:
        while True:
            response = session.get(url, params=params, timeout=60)
            response.raise_for_status()
            body = response.content
            yield body
            token = json.loads(body)["next_page_token"]
            if not token:
                return
            params["page_token"] = token


def raw(vendor: str, dataset: str, page_size: int) -> dict[str, Any]:
    total = 0
    with (
        tempfile.TemporaryFile() as spool,
        gzip.GzipFile(fileobj=spool, mode="wb", compresslevel=6) as gz,
    ):
        for body in _json_pages(vendor, dataset, page_size):
            gz.write(body)
            total += len(body)
    return {"bytes": total}


def download(
    source_type: str, connection: dict[str, Any], source_id: str | None, levers_off: list[str]
) -> dict[str, Any]:
    """Validate a run (so the ledger and lock are real), then time the download alone."""
    from bench.common import direct_download, direct_validate, registered_source, task_request
    from shared.runtime import aws
    from shared.store.db import Database

    _turn_off(levers_off)
    if "jsonl" in levers_off:
        connection = {key: value for key, value in connection.items() if key != "format"}
    db = Database(os.environ["DATABASE_URL"], application_name="sourceflow-bench")
    # A cursor before every record: a Normal run loads the whole window.
    source_id = registered_source(db, source_type, connection, cursor=CURSOR, source_id=source_id)
    request = task_request(source_id)
    plan = direct_validate(db, request, clock=lambda: RUN_START)["plan"]
    aws.client("s3")  # made once per container, as a warm Lambda has it
    started = time.perf_counter()
    result = direct_download(
        db,
        request,
        plan,
        bucket=os.environ["RAW_BUCKET"],
        part_max_records=int(os.environ.get("PART_MAX_RECORDS", PART_MAX_RECORDS)),
    )
    seconds = time.perf_counter() - started
    db.close()
    return {"records": result["records"], "compressed_bytes": result["bytes"], "seconds": seconds}


def _turn_off(levers: list[str]) -> None:
    """Put back, in this process only, what each lever replaced."""
    if "isal" in levers:
        from services.download import adapters

        adapters.igzip = gzip  # type: ignore[assignment]
        os.environ["RAW_GZIP_LEVEL"] = "6"
    if "prefetch" in levers:
        from shared.connectors import http_api

        http_api.prefetched = lambda produce, ahead=1: produce()  # type: ignore[assignment,return-value]
    if "per-page" in levers:
        from shared.rules.versions import VersionFilter

        def one_by_one(
            self: VersionFilter, stamps: Sequence[datetime], keys: Sequence[Any]
        ) -> list[bool]:
            # As before pages: each record's digest made, and its own decision.
            return [self.admit(s, k) for s, k in zip(stamps, keys) if self.digest(k)]  # noqa: B905

        VersionFilter.admit_page = one_by_one  # type: ignore[method-assign,assignment]
    if "listed-per-page" in levers:
        from shared.rules.versions import Met, VersionFilter, _stamps_of

        def one_at_a_time(
            self: VersionFilter, stamps: Sequence[datetime], keys: Sequence[Any]
        ) -> list[Met]:
            # As before: each version looked up on its own (not by `_holds`, which is `_held`).
            return [
                (s, k)
                for s, k in zip(stamps, keys, strict=True)
                if ((held := self._recent.get(k)) is not None and s in _stamps_of(held))
                or (s, k) in self._future
            ]

        VersionFilter._held = one_at_a_time  # type: ignore[method-assign]
    if "overlap" in levers:
        from services.download.adapters import SpooledPart
        from services.download.service import PartUploads

        def at_once(
            self: PartUploads, spooled: SpooledPart | None, then: Callable[[], None] = lambda: None
        ) -> None:
            if spooled is not None:
                spooled.upload()
            then()

        PartUploads.submit = at_once  # type: ignore[method-assign]


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM), in MB. Not ru_maxrss: a process
    started by another inherits its parent's, so this small one would report the benchmark's."""
    status = Path("/proc/self/status").read_text()
    [kib] = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.transfer")
    parser.add_argument("mode", choices=["vendor", "ideal", "raw", "download"])
    parser.add_argument("--vendor", help="the vendor's base URL")
    parser.add_argument("--dataset", help="the vendor's dataset")
    parser.add_argument("--page-size", type=int, default=10000)
    parser.add_argument("--source-type", default="http_api")
    parser.add_argument("--connection", type=json.loads, help="download: the source's (JSON)")
    parser.add_argument("--source-id", help="download: the source's id (its secrets bear it)")
    parser.add_argument("--levers", default="", help=f"download: turn off some of {list(LEVERS)}")
    args = parser.parse_args()
    levers_off = [lever for lever in args.levers.split(",") if lever]
    if unknown := set(levers_off) - set(LEVERS):
        parser.error(f"unknown lever {sorted(unknown)[0]!r}; expected some of {list(LEVERS)}")
    started = time.perf_counter()
    if args.mode == "download":
        connection = args.connection or {
            "base_url": args.vendor,
            "dataset": args.dataset,
            "page_size": args.page_size,
            "format": "jsonl",
        }
        figures = download(args.source_type, connection, args.source_id, levers_off)
    else:
        measure = {"vendor": vendor_mode, "ideal": ideal, "raw": raw}[args.mode]
        figures = measure(args.vendor, args.dataset, args.page_size)
    figures.setdefault("seconds", time.perf_counter() - started)
    figures["peak_rss_mb"] = peak_rss_mb()
    json.dump(figures, sys.stdout)
    print()


if __name__ == "__main__":
    main()
