"""One measured transfer, run in its own process so that its peak memory is its own.

`python -m bench.transfer MODE --vendor URL --dataset NAME --page-size N` prints one JSON line.
MODE:
- `serve`: fetch every page and discard it — the vendor's own serving rate;
- `raw`: fetch every page and write it gzip-compressed to a file — the physical limit here;
- `download`: the download service's code path (connector, S3 sink, ledger, manifest) into
  the raw bucket, configured from the environment like the service (DATABASE_URL, RAW_BUCKET,
  AWS_ENDPOINT_URL…).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from shared.timefmt import isoformat

# The download's window is frozen (cursor → run start) so that every mode asks the vendor for
# exactly the same pages — the same URLs the connector builds — and all are served from the
# vendor's page cache once the first download has rendered them.
CURSOR = datetime(1990, 1, 1, tzinfo=UTC)
RUN_START = datetime(2030, 1, 1, tzinfo=UTC)


def _pages(vendor: str, dataset: str, page_size: int) -> Any:
    url = f"{vendor}/datasets/{dataset}/records"
    params = {
        "modified_after": isoformat(CURSOR),
        "modified_until": isoformat(RUN_START),
        "page_size": str(page_size),
    }
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


def serve(vendor: str, dataset: str, page_size: int) -> dict[str, Any]:
    total = 0
    for body in _pages(vendor, dataset, page_size):
        total += len(body)
    return {"bytes": total}


def raw(vendor: str, dataset: str, page_size: int) -> dict[str, Any]:
    total = 0
    with (
        tempfile.TemporaryFile() as spool,
        gzip.GzipFile(fileobj=spool, mode="wb", compresslevel=6) as gz,
    ):
        for body in _pages(vendor, dataset, page_size):
            gz.write(body)
            total += len(body)
    return {"bytes": total}


def download(vendor: str, dataset: str, page_size: int) -> dict[str, Any]:
    """Validate a run (so the ledger and lock are real), then time the download alone."""
    import os

    from bench.common import bench_source, direct_download, direct_validate, task_request
    from shared.runtime.catalogue import PART_MAX_RECORDS
    from shared.store.db import Database

    db = Database(os.environ["DATABASE_URL"], application_name="sourceflow-bench")
    # A cursor before every record: a Normal run loads the whole dataset.
    source_id = bench_source(db, vendor, dataset, cursor=CURSOR, page_size=page_size)
    request = task_request(source_id)
    plan = direct_validate(db, request, clock=lambda: RUN_START)["plan"]
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


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM), in MB. Not ru_maxrss: a process
    started by another inherits its parent's, so this small one would report the benchmark's."""
    status = Path("/proc/self/status").read_text()
    [kib] = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.transfer")
    parser.add_argument("mode", choices=["serve", "raw", "download"])
    parser.add_argument("--vendor", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--page-size", type=int, default=10000)
    args = parser.parse_args()
    measure = {"serve": serve, "raw": raw, "download": download}[args.mode]
    started = time.perf_counter()
    figures = measure(args.vendor, args.dataset, args.page_size)
    figures.setdefault("seconds", time.perf_counter() - started)
    figures["peak_rss_mb"] = peak_rss_mb()
    json.dump(figures, sys.stdout)
    print()


if __name__ == "__main__":
    main()
