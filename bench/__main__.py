"""`make bench`: every figure beside its reference, measured in the same run, as a ratio.

1. Download throughput: 100k and 1M vendor records through the download service's code path
   into the raw bucket, against the raw transfer of the same bytes (plain HTTP client, gzip, to
   disk) and the vendor's own serving rate; peak memory at both sizes.
2. Orchestration overhead: a run with nothing new through the whole state machine, against the
   three services' logic called directly in one process.
3. Scale: 50, 100, 200 sources due at once, fired by one schedule tick.
Writes `.sourceflow/bench.json`.
"""

from __future__ import annotations

import os

# The services' logic runs in this process too: no CloudWatch or X-Ray output in the report.
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

import json
import math
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cost import run_cost
from bench.orchestration import measure_orchestration
from bench.scale import measure_scale
from infra.local.stack import LocalStack, StackOptions
from infra.local.vendor import ANNOUNCEMENT

STATE_DIR = Path(".sourceflow")
RESULTS = STATE_DIR / "bench.json"
SIZES = {"100k": 100_000, "1m": 1_000_000}


@contextmanager
def cached_vendor(datasets: dict[str, int]) -> Any:
    """The demo vendor serving pre-rendered pages (rendered once, then from memory)."""
    args = [arg for name, size in datasets.items() for arg in ("--dataset", f"{name}={size}")]
    vendor = subprocess.Popen(
        [sys.executable, "-m", "infra.local.vendor", "--port", "0", "--cache-pages", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert vendor.stdout is not None
        yield vendor.stdout.readline().strip().removeprefix(ANNOUNCEMENT)
    finally:
        vendor.terminate()
        vendor.wait(timeout=10)


def transfer(mode: str, vendor: str, dataset: str, env: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.transfer", mode, "--vendor", vendor, "--dataset", dataset],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    figures: dict[str, Any] = json.loads(completed.stdout)
    return figures


def measure_download(stack_env: dict[str, str]) -> dict[str, Any]:
    env = {**os.environ, **stack_env}
    results: dict[str, Any] = {}
    with cached_vendor({f"bench-{label}": size for label, size in SIZES.items()}) as vendor:
        for label in SIZES:
            dataset = f"bench-{label}"
            transfer("download", vendor, dataset, env)  # renders every page once: the cache
            serve = transfer("serve", vendor, dataset, env)
            raw = transfer("raw", vendor, dataset, env)
            download = transfer("download", vendor, dataset, env)
            results[label] = {"serve": serve, "raw": raw, "download": download}
            print(
                f"  {label}: serve {serve['seconds']:.2f}s raw {raw['seconds']:.2f}s "
                f"download {download['seconds']:.2f}s",
                flush=True,
            )
    big = results["1m"]
    megabytes = big["raw"]["bytes"] / 1e6
    return {
        "records": big["download"]["records"],
        "records_per_s": big["download"]["records"] / big["download"]["seconds"],
        "mb_per_s": megabytes / big["download"]["seconds"],
        "raw_mb_per_s": megabytes / big["raw"]["seconds"],
        "vendor_mb_per_s": megabytes / big["serve"]["seconds"],
        "ratio_to_raw": big["raw"]["seconds"] / big["download"]["seconds"],
        "peak_rss_mb_100k": results["100k"]["download"]["peak_rss_mb"],
        "peak_rss_mb_1m": big["download"]["peak_rss_mb"],
        "raw_peak_rss_mb_1m": big["raw"]["peak_rss_mb"],
        "compressed_mb_1m": big["download"]["compressed_bytes"] / 1e6,
        "transferred_mb_1m": megabytes,
    }


def main() -> int:
    started = time.monotonic()
    report: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    options = StackOptions(state_dir=STATE_DIR / "bench", ticker=False)
    with LocalStack(options) as stack:
        print("download throughput…", flush=True)
        report["download"] = measure_download(stack.env)
        print("orchestration overhead…", flush=True)
        report["orchestration"] = measure_orchestration(stack)
        print("scale…", flush=True)
        report["scale"] = measure_scale(stack)
    report["cost"] = estimate_costs(report)
    report["wall_s"] = time.monotonic() - started
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(f"written to {RESULTS}")
    return 0


def estimate_costs(report: dict[str, Any]) -> dict[str, Any]:
    """A typical Normal run (nothing much new) and a 1M-record Re-specs run, on AWS."""
    orchestration, download = report["orchestration"], report["download"]
    logic = orchestration["median_direct_step_s"]
    return {
        "normal_run": run_cost(
            transitions=orchestration["state_transitions_per_run"], step_seconds=logic, parts=0
        ),
        "respecs_1m_run": run_cost(
            transitions=orchestration["state_transitions_per_run"],
            step_seconds={**logic, "Download": download["records"] / download["records_per_s"]},
            parts=math.ceil(download["records"] / 100_000),
        ),
    }


def print_report(report: dict[str, Any]) -> None:
    d, o = report["download"], report["orchestration"]
    print()
    print(
        f"download 1M records: {d['records_per_s']:,.0f} records/s, {d['mb_per_s']:.1f} MB/s "
        f"vs raw transfer {d['raw_mb_per_s']:.1f} MB/s -> ratio {d['ratio_to_raw']:.2f} "
        f"(target >= 0.60); vendor serves {d['vendor_mb_per_s']:.1f} MB/s"
    )
    print(
        f"peak RSS: {d['peak_rss_mb_100k']:.0f} MB at 100k, {d['peak_rss_mb_1m']:.0f} MB at 1M "
        f"(raw client {d['raw_peak_rss_mb_1m']:.0f} MB)"
    )
    print(
        f"orchestration: median {o['median_state_machine_s']:.3f}s per run through the state "
        f"machine vs {o['median_direct_s']:.3f}s direct -> overhead "
        f"{o['median_overhead_s']:.3f}s"
    )
    for step, seconds in o["median_step_s"].items():
        print(f"  {step}: {seconds:.3f}s")
    for size, figures in report["scale"].items():
        if size.isdigit():
            print(
                f"scale {size}: {figures['wall_s']:.1f}s, {figures['runs_per_min']:.0f} runs/min,"
                f" max {figures['db_connections']} DB connections, all correct: "
                f"{figures['all_correct']}"
            )


if __name__ == "__main__":
    sys.exit(main())
