"""dlt loading the vendor's dataset to local files: the reference a data engineer would reach
for. The same pages the download reads (the same URLs, so the vendor serves them from its
cache), incremental on last_modified with the key as primary key, into dlt's filesystem
destination as gzip JSON lines.

Runs in a virtualenv of its own with dlt installed (bench/download.py makes it), so it imports
nothing of sourceflow's. Prints one JSON line: seconds, records, peak RSS (VmHWM).
`python bench/dlt_load.py --vendor URL --dataset NAME --params JSON --out DIR` (the first
request's query parameters: the download's own, `bench.transfer.page_params`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/dlt_load.py")
    for name in ("--vendor", "--dataset", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--params", type=json.loads, required=True, help="the first request's")
    args = parser.parse_args()
    # No telemetry: this machine reaches nothing but its own services.
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    import dlt
    import requests

    url = f"{args.vendor}/datasets/{args.dataset}/records"

    @dlt.resource(name="listings", primary_key="id", write_disposition="append")
    def listings(
        last_modified: Any = dlt.sources.incremental(  # noqa: B008 (dlt's own idiom)
            "last_modified", initial_value=args.params["modified_after"]
        ),
    ) -> Iterator[list[dict[str, Any]]]:
        params = dict(args.params)
        with requests.Session() as session:
            while True:
                response = session.get(url, params=params, timeout=60)
                response.raise_for_status()
                page = response.json()
                yield page["records"]
                if not page["next_page_token"]:
                    return
                params["page_token"] = page["next_page_token"]

    out = Path(args.out).resolve()
    pipeline = dlt.pipeline(
        pipeline_name="bench",
        pipelines_dir=str(out / "pipelines"),
        destination=dlt.destinations.filesystem(bucket_url=(out / "files").as_uri()),
        dataset_name="vendor",
    )
    started = time.perf_counter()
    info = pipeline.run(listings(), loader_file_format="jsonl")
    seconds = time.perf_counter() - started
    records = pipeline.last_trace.last_normalize_info.row_counts.get("listings", 0)
    json.dump(
        {
            "seconds": seconds,
            "records": records,
            "loads": len(info.loads_ids),
            "peak_rss_mb": peak_rss_mb(),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
